"""A first look at every process's CPU time, cheap enough to take before anything is imported.

A one-shot scan needs two looks to tell CPU% (cpu-time deltas). Taking the first one at the
very start of ``reaper scan`` and the second after the engine, the rules and the
configuration have loaded lets that loading time be the sampling window, instead of a sleep
added on top of it. Standard library only, and only modules the interpreter has loaded at
start-up, on purpose: the console script runs it before it imports click. Linux only
(elsewhere there is no cheap way; the scan samples).
"""

from __future__ import annotations

import os
import sys
import time


class CpuProbe:
    """One look (a plain class: ``dataclasses`` would cost ~9 ms before the look)."""

    __slots__ = ("samples", "taken_at")

    def __init__(self, taken_at: float, samples: dict[int, tuple[float, float]]) -> None:
        self.taken_at = taken_at  # time.time() when the look began
        self.samples = samples  # pid -> (create_time, cpu_time), both in seconds


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


_early: list[CpuProbe | None] = []  # the look probe_early took, until it is handed out


def probe_early() -> None:
    """Take the first look now, for the scan this process is about to run: the console
    script does, before it imports click and the commands (see :func:`take_probe`)."""
    _early[:] = [probe_cpu()]


def take_probe() -> CpuProbe | None:
    """The look :func:`probe_early` took (handed out once), else a first look taken now."""
    probe = _early.pop() if _early else None
    return probe if probe is not None else probe_cpu()


def discard_early() -> None:
    """Forget an early look no scan used (the command was another, or failed first)."""
    _early.clear()


def _btime(root: str) -> float:
    with open(f"{root}/stat", "rb") as stat:
        for line in stat:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError("no btime")
