"""Short human forms for durations, sizes and counts, as the CLI and reasons show them."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``5h 12m``, ``5d 2h``, ``4m 10s``, ``45s``: the two largest units."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 process``, ``2 processes``. (overseer/cli/output.py keeps the CLI's own: the
    command modules ``reaper --help`` lists import nothing of the domain.)"""
    return f"{count} {word if count == 1 else (many or word + 's')}"
