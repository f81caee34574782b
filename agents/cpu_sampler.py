"""CPU% from cpu-time deltas between two looks at the same process.

Keyed by (pid, start time), so a reused PID never inherits another process's history.
100% is one core fully busy. A process seen for the first time has no recent figure; a
one-shot scan therefore looks twice, a short interval apart, instead of reporting 0.0 the
way ``psutil.Process.cpu_percent()`` does on its first call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from reaper_engine.models import ProcessInfo

_Key = tuple[int, float]


class CpuSampler:
    """Remembers recent (cpu_time, wall time) samples per process.

    CPU% is measured against the newest sample at least ``min_window`` seconds old, so two
    looks a few milliseconds apart (a scan, then the reap that re-checks it) do not measure
    noise: cpu time advances in clock ticks (10 ms), and over 5 ms a busy loop can read 0%.
    """

    def __init__(self, min_window: float = 0.2, keep: int = 8) -> None:
        self.min_window = min_window
        self.keep = keep
        self._history: dict[_Key, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()

    def knows(self, processes: Iterable[ProcessInfo]) -> float:
        """The share of ``processes`` that have history (0.0 .. 1.0)."""
        procs = list(processes)
        if not procs:
            return 1.0
        with self._lock:
            return sum(1 for p in procs if _key(p) in self._history) / len(procs)

    def annotate(self, processes: Iterable[ProcessInfo], taken_at: float) -> list[ProcessInfo]:
        """Fill ``cpu_percent`` from history, remember this look, forget exited processes."""
        out: list[ProcessInfo] = []
        history: dict[_Key, list[tuple[float, float]]] = {}
        with self._lock:
            for proc in processes:
                key = _key(proc)
                samples = self._history.get(key, [])
                ref = _reference(samples, taken_at, self.min_window)
                if ref is None:
                    out.append(proc)
                    history[key] = [(proc.cpu_time, taken_at)]
                    continue
                cpu_before, wall_before = samples[ref]
                elapsed = taken_at - wall_before
                percent = 100.0 * (proc.cpu_time - cpu_before) / elapsed if elapsed > 0 else 0.0
                out.append(proc.model_copy(update={"cpu_percent": round(max(0.0, percent), 1)}))
                history[key] = [*samples[ref:], (proc.cpu_time, taken_at)][-self.keep :]
            self._history = history
        return out


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
) -> list[ProcessInfo]:
    """Read processes with CPU% filled in, taking a short first sample when history is thin.

    ``read`` returns (processes, taken_at); ``wait`` pauses between the two reads of a
    one-shot sample (the measurement window, injected so tests need not sleep).
    """
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
