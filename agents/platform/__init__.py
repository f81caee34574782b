"""Reading the local machine's process table: a fast /proc reader and the portable psutil one."""

from __future__ import annotations

import sys
from pathlib import Path

from agents.platform.procfs import ProcfsReader, ProcParseError, StatFields, parse_stat
from agents.platform.psutil_reader import PsutilReader
from agents.platform.snapshot import ProcessReader, ProcessSnapshot

__all__ = [
    "ProcParseError",
    "ProcessReader",
    "ProcessSnapshot",
    "ProcfsReader",
    "PsutilReader",
    "StatFields",
    "default_reader",
    "parse_stat",
]


def default_reader(proc_root: Path = Path("/proc")) -> ProcessReader:
    """The /proc reader on Linux when procfs is mounted and readable, else psutil."""
    if sys.platform.startswith("linux"):
        try:
            (proc_root / "self" / "stat").read_bytes()
        except OSError:
            pass
        else:
            return ProcfsReader(proc_root)
    return PsutilReader()
