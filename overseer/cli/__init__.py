"""The ``reaper`` command line (Click; Rich on a terminal). ``main`` is the console script."""

from overseer.cli.app import main, reaper

__all__ = ["main", "reaper"]
