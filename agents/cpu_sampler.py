"""CPU% from cpu-time deltas between two looks at the same process.

Keyed by (pid, start time), so a reused PID never inherits another process's history.
100% is one core fully busy. A process seen for the first time has no recent figure; a
one-shot scan therefore looks twice, a short interval apart, instead of reporting 0.0 the
way ``psutil.Process.cpu_percent()`` does on its first call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agents.cpu_probe import CpuProbe
from reaper_engine.models import ProcessInfo

_Key = tuple[int, float]


@dataclass
class _History:
    recent: list[tuple[float, float]]  # (cpu_time, wall): for CPU% over the last moments
    checkpoints: list[tuple[float, float]]  # (wall, cpu_time): for windows of minutes/hours


class CpuSampler:
    """Remembers (cpu_time, wall time) samples per process.

    CPU% is measured against the newest sample at least ``min_window`` seconds old, so two
    looks a few milliseconds apart (a scan, then the reap that re-checks it) do not measure
    noise: cpu time advances in clock ticks (10 ms), and over 5 ms a busy loop can read 0%.

    For rules about longer windows (sustained load, idle time) it also keeps checkpoints, at
    most ``max_checkpoints`` per process: when full, every other one is dropped, so coverage
    doubles as resolution halves and memory stays bounded however long the daemon runs.
    They reach rules as ``ProcessInfo.cpu_samples``.
    """

    def __init__(
        self,
        min_window: float = 0.2,
        keep: int = 8,
        checkpoint_every: float = 20.0,
        max_checkpoints: int = 32,
    ) -> None:
        self.min_window = min_window
        self.keep = keep
        self.checkpoint_every = checkpoint_every
        self.max_checkpoints = max_checkpoints
        self._history: dict[_Key, _History] = {}
        self._lock = threading.Lock()
        self.seeded_at: float | None = None  # a probe's time, until the next look uses it

    def seed(self, probe: CpuProbe) -> None:
        """Start history from a probe taken earlier (see agents.cpu_probe)."""
        with self._lock:
            for pid, (create_time, cpu_time) in probe.samples.items():
                key = (pid, round(create_time, 2))
                if key not in self._history:
                    self._history[key] = _History(
                        [(cpu_time, probe.taken_at)], [(probe.taken_at, cpu_time)]
                    )
            self.seeded_at = probe.taken_at

    def knows(self, processes: Iterable[ProcessInfo]) -> float:
        """The share of ``processes`` that have history (0.0 .. 1.0)."""
        procs = list(processes)
        if not procs:
            return 1.0
        with self._lock:
            return sum(1 for p in procs if _key(p) in self._history) / len(procs)

    def annotate(self, processes: Iterable[ProcessInfo], taken_at: float) -> list[ProcessInfo]:
        """Fill ``cpu_percent`` and ``cpu_samples``, remember this look, forget the dead.

        A process with no earlier look (it started since the last one, or a read missed it)
        gets its lifetime average, cpu time over age: for a process younger than the
        interval between looks that *is* its recent load, and for any other it is a better
        guess than psutil's 0.0, which would hide a runaway loop for a whole interval.
        """
        out: list[ProcessInfo] = []
        histories: dict[_Key, _History] = {}
        min_window, keep = self.min_window, self.keep
        with self._lock:
            known = self._history
            for proc in processes:
                key = (proc.pid, round(proc.create_time, 2))
                cpu_time = proc.cpu_time
                old = known.get(key)
                ref = None if old is None else _reference(old.recent, taken_at, min_window)
                if old is None or ref is None:
                    age = taken_at - proc.create_time
                    percent = 100.0 * cpu_time / age if age > 0 else 0.0
                    recent = [(cpu_time, taken_at)]
                else:
                    cpu_before, wall_before = old.recent[ref]
                    elapsed = taken_at - wall_before
                    percent = 100.0 * (cpu_time - cpu_before) / elapsed if elapsed > 0 else 0.0
                    recent = [*old.recent[ref:], (cpu_time, taken_at)][-keep:]
                checkpoints = self._checkpoint(old.checkpoints if old else [], taken_at, cpu_time)
                histories[key] = _History(recent, checkpoints)
                update = {
                    "cpu_percent": round(max(0.0, percent), 1),
                    "cpu_samples": tuple(checkpoints),
                }
                out.append(proc.model_copy(update=update))
            self._history = histories
            self.seeded_at = None
        return out

    def _checkpoint(
        self, checkpoints: list[tuple[float, float]], wall: float, cpu: float
    ) -> list[tuple[float, float]]:
        """The checkpoints after this look; the last entry is always the latest look."""
        if len(checkpoints) >= 2 and wall - checkpoints[-2][0] < self.checkpoint_every:
            kept = [*checkpoints[:-1], (wall, cpu)]  # too soon: the latest look replaces the last
        else:
            kept = [*checkpoints, (wall, cpu)]
        if len(kept) > self.max_checkpoints:
            kept = [*kept[:-1:2], kept[-1]]
        return kept


def _reference(samples: list[tuple[float, float]], now: float, min_window: float) -> int | None:
    """Index of the newest sample at least ``min_window`` old, else of the oldest one."""
    if not samples:
        return None
    for index in range(len(samples) - 1, -1, -1):
        if now - samples[index][1] >= min_window:
            return index
    return 0


def sampled(
    read: Callable[[], tuple[Iterable[ProcessInfo], float]],
    sampler: CpuSampler,
    *,
    sample_seconds: float,
    wait: Callable[[float], object],
    min_known: float = 0.5,
    now: Callable[[], float] = time.time,
) -> list[ProcessInfo]:
    """Read processes with CPU% filled in, taking a short first sample when history is thin.

    ``read`` returns (processes, taken_at); ``wait`` pauses between the two reads of a
    one-shot sample (the measurement window, injected so tests need not sleep); ``now`` is
    the clock of ``taken_at`` and of a probe's ``taken_at`` (``time.time``).
    """
    seeded = sampler.seeded_at
    if seeded is not None and sample_seconds > 0:
        # The probe is the first look: wait only for what the window still lacks, then read
        # once (reading before the wait as well would only add a read to the scan's time).
        short = sample_seconds - (now() - seeded)
        if short > 0:
            wait(short)
        processes, taken_at = read()
        return sampler.annotate(list(processes), taken_at)
    processes, taken_at = read()
    procs = list(processes)
    if sampler.knows(procs) < min_known and sample_seconds > 0:
        sampler.annotate(procs, taken_at)
        wait(sample_seconds)
        processes, taken_at = read()
        procs = list(processes)
    return sampler.annotate(procs, taken_at)


def _key(proc: ProcessInfo) -> _Key:
    return proc.pid, round(proc.create_time, 2)
