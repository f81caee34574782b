"""Short human forms for durations and sizes, as the CLI and reasons show them."""

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
