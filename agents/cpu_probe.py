"""A first look at every process's CPU time, cheap enough to take before anything is imported.

A one-shot scan needs two looks to tell CPU% (cpu-time deltas). Taking the first one at the
very start of ``reaper scan`` and the second after the engine, the rules and the
configuration have loaded lets that loading time be the sampling window, instead of a sleep
added on top of it. Standard library only, on purpose: this module runs before pydantic and
structlog are imported. Linux only (elsewhere there is no cheap way; the scan samples).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CpuProbe:
    taken_at: float  # time.time() when the look began
    samples: dict[int, tuple[float, float]]  # pid -> (create_time, cpu_time), both in seconds


def probe_cpu(root: str = "/proc") -> CpuProbe | None:
    """(start time, cpu time) of every process, or None where /proc cannot be read."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        hz = os.sysconf("SC_CLK_TCK")
        btime = _btime(root)
        names = os.listdir(root)
    except (OSError, ValueError):
        return None
    taken_at = time.time()
    samples: dict[int, tuple[float, float]] = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"{root}/{name}/stat", "rb") as stat:
                data = stat.read()
            # After the last ")" (comm may hold anything): state is field 0, utime 11,
            # stime 12, starttime 19.
            fields = data[data.rindex(b")") + 2 :].split()
            utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
        except (OSError, ValueError, IndexError):
            continue  # gone, or unreadable: the real scan skips and counts it
        # The readers' formula, operand for operand, so start times match to the bit.
        samples[int(name)] = (float(start) / hz + btime, (utime + stime) / hz)
    return CpuProbe(taken_at, samples)


def _btime(root: str) -> float:
    with open(f"{root}/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError("no btime")
