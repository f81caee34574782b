"""The ``reaper`` command line (Click; Rich on a terminal). ``main`` is the console script.

``main`` is defined here, not in ``app``, so that ``reaper scan`` takes its first look at CPU
times before click and the commands are imported: the scan's sampling window then starts
as early as it can (``agents.cpu_probe``).
"""

from __future__ import annotations

import gc
import sys

TYPE_CHECKING = False  # not typing's: importing typing before the scan's first look costs ~3 ms
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from overseer.cli.app import reaper

__all__ = ["main", "reaper"]


def main(argv: list[str] | None = None) -> None:
    """The console script ``reaper``."""
    args = sys.argv[1:] if argv is None else argv
    scan = _command(args) == "scan" and not {"-h", "--help"} & set(args)
    one_shot = scan and argv is None  # this process ends with the scan
    if one_shot:
        # A scan leaves little cyclic garbage (~1,500 objects): no collections while it
        # imports (~10 ms) ...
        gc.disable()
    if scan:
        from agents.cpu_probe import probe_early

        probe_early()
    try:
        from overseer.cli.app import main as run

        run(argv)
    finally:
        if scan:
            from agents.cpu_probe import discard_early

            discard_early()
        if one_shot:
            # ... and none at shutdown over the ~35k objects the imports made (~30-40 ms):
            # the scan wrote only to stdout and stderr, which the interpreter flushes.
            gc.freeze()


def _command(args: Sequence[str]) -> str | None:
    """The subcommand's name: the first argument that is not a global option or its value."""
    rest = iter(args)
    for arg in rest:
        if arg == "--log-format":
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return None


def __getattr__(name: str) -> Any:
    if name == "reaper":  # the click group, imported on demand (``main`` needs it later)
        from overseer.cli.app import reaper

        return reaper
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
