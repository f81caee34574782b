"""Seed 001's resource monitor: the system's load average, CPU idle share and free memory."""

from __future__ import annotations

import contextlib

import psutil
from pydantic import BaseModel, ConfigDict


class ResourceSnapshot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    load_average: tuple[float, float, float] | None = None  # 1, 5, 15 minutes
    cpu_idle_percent: float | None = None
    memory_available_bytes: int | None = None
    memory_total_bytes: int | None = None


def prime_resources() -> None:
    """Start the CPU-times window, so that the first ``sample_resources`` has one to measure."""
    with contextlib.suppress(OSError, AttributeError):
        psutil.cpu_times_percent(interval=None)


def sample_resources() -> ResourceSnapshot:
    """Read the resources now; each value is None where this OS cannot tell.

    ``cpu_times_percent(None)`` measures since its previous call, which for the daemon is the
    previous scan: the idle share over the last interval, without blocking to sample.
    """
    try:
        one, five, fifteen = psutil.getloadavg()
        load: tuple[float, float, float] | None = (one, five, fifteen)
    except (OSError, AttributeError):
        load = None
    try:
        idle: float | None = float(psutil.cpu_times_percent(interval=None).idle)
    except (OSError, AttributeError):
        idle = None
    available: int | None = None
    total: int | None = None
    try:
        memory = psutil.virtual_memory()
        available, total = int(memory.available), int(memory.total)
    except OSError:
        pass  # reported as unknown
    return ResourceSnapshot(
        load_average=load,
        cpu_idle_percent=idle,
        memory_available_bytes=available,
        memory_total_bytes=total,
    )
