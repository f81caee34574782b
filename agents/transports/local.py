"""The local transport: this machine's processes, read directly and signalled safely.

Listing uses the fastest reader the OS offers (``/proc`` on Linux, psutil elsewhere) with CPU%
from cpu-time deltas; signals go through a pidfd on Linux and psutil elsewhere. The factory
keeps one CPU sampler and one signaller for all its transports, so a daemon's repeated scans
build CPU history and a signal's pidfd is still there when the terminator waits for the exit.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from typing import Protocol, Self

import psutil

from agents.cpu_probe import CpuProbe
from agents.cpu_sampler import CpuSampler, sampled
from agents.platform import PsutilReader, default_reader
from agents.platform.pidfd import PidfdSignaller, pidfd_supported
from agents.platform.psutil_signals import PsutilSignaller
from agents.platform.snapshot import ProcessReader
from agents.transports.base import ProcessListing, SignalDelivery, Transport
from reaper_engine.config import ScannerSettings
from reaper_engine.errors import TaskRefusedError
from reaper_engine.models import OS, DiscoverData, HostSpec, ProcessInfo
from reaper_engine.safety import Vantage
from reaper_engine.signals import Signal


class Signaller(Protocol):
    def send(self, pid: int, create_time: float, sig: Signal) -> SignalDelivery: ...

    def wait_gone(self, pid: int, create_time: float, timeout: float) -> bool: ...

    def close(self) -> None: ...


def this_os() -> OS:
    if sys.platform.startswith("linux"):
        return OS.LINUX
    if sys.platform == "darwin":
        return OS.MACOS
    if sys.platform.startswith("win"):
        return OS.WINDOWS
    raise TaskRefusedError(f"unsupported platform {sys.platform}", error_code="OS_MISMATCH")


def default_signaller(reader: ProcessReader) -> Signaller:
    if sys.platform.startswith("linux"):
        if pidfd_supported():

            def start_time_of(pid: int) -> float | None:
                proc = reader.get(pid)
                return proc.create_time if proc is not None else None

            return PidfdSignaller(start_time_of)
    return PsutilSignaller()


class LocalTransport(Transport):
    def __init__(
        self,
        spec: HostSpec,
        *,
        reader: ProcessReader,
        sampler: CpuSampler,
        signaller: Signaller,
        sample_seconds: float,
        baseline_at: float | None = None,
        wait: Callable[[float], object] = time.sleep,
    ) -> None:
        super().__init__(spec)
        if spec.os is not this_os():
            raise TaskRefusedError(
                f"host '{spec.host_id}' is declared {spec.os} but this machine runs {this_os()}",
                error_code="OS_MISMATCH",
            )
        self.reader = reader
        self.sampler = sampler
        self.signaller = signaller
        self.sample_seconds = sample_seconds
        self.baseline_at = baseline_at
        self._wait = wait

    def facts(self) -> DiscoverData:
        return DiscoverData(
            hostname=socket.gethostname(),
            os=self.spec.os.value,
            os_version=platform.platform(),
            cpu_count=os.cpu_count() or 1,
            process_count=len(psutil.pids()),
            boot_time=psutil.boot_time(),
            agent_user=_my_user(),
        )

    def vantage(self) -> Vantage:
        me = psutil.Process()
        posix = hasattr(os, "getpgrp")
        return Vantage(
            user=_my_user(),
            uid=os.geteuid() if hasattr(os, "geteuid") else None,
            pid=me.pid,
            ancestors=frozenset(p.pid for p in _parents(me)),
            pgid=os.getpgrp() if posix else None,
            sid=os.getsid(0) if posix else None,
            baseline_at=self.baseline_at,
        )

    def list_processes(self) -> ProcessListing:
        skipped: dict[str, int] = {}

        def read() -> tuple[tuple[ProcessInfo, ...], float]:
            snapshot = self.reader.read()
            skipped.clear()
            skipped.update(snapshot.skipped)
            return snapshot.processes, snapshot.taken_at

        processes = sampled(read, self.sampler, sample_seconds=self.sample_seconds, wait=self._wait)
        return ProcessListing(processes=tuple(processes), skipped=dict(skipped))

    def get_process(self, pid: int) -> ProcessInfo | None:
        return self.reader.get(pid)

    def send_signal(self, pid: int, create_time: float, signal: Signal) -> SignalDelivery:
        return self.signaller.send(pid, create_time, signal)

    def wait_gone(self, pid: int, create_time: float, timeout: float) -> bool:
        return self.signaller.wait_gone(pid, create_time, timeout)


class LocalTransportFactory:
    """Opens LocalTransports that share one reader, CPU history and signaller."""

    def __init__(
        self,
        *,
        reader: ProcessReader | None = None,
        signaller: Signaller | None = None,
        sample_seconds: float = 0.2,
        capture_baseline: bool = False,
        cpu_probe: CpuProbe | None = None,
    ) -> None:
        self.reader: ProcessReader = reader if reader is not None else default_reader()
        self.signaller = signaller or default_signaller(self.reader)
        self.sampler = CpuSampler()
        if cpu_probe is not None:
            self.sampler.seed(cpu_probe)
        self.sample_seconds = sample_seconds
        # Scope "baseline": everything started before this moment is pre-existing.
        self.baseline_at: float | None = time.time() if capture_baseline else None

    @classmethod
    def from_settings(
        cls,
        scanner: ScannerSettings,
        *,
        capture_baseline: bool = False,
        cpu_probe: CpuProbe | None = None,
    ) -> Self:
        """A factory as the ``[scanner]`` section configures it."""
        reader: ProcessReader = default_reader() if scanner.use_procfs else PsutilReader()
        return cls(
            reader=reader,
            sample_seconds=scanner.cpu_sample_seconds,
            capture_baseline=capture_baseline,
            cpu_probe=cpu_probe,
        )

    def open(self, spec: HostSpec) -> Transport:
        return LocalTransport(
            spec,
            reader=self.reader,
            sampler=self.sampler,
            signaller=self.signaller,
            sample_seconds=self.sample_seconds,
            baseline_at=self.baseline_at,
        )

    def close(self) -> None:
        self.signaller.close()


def _my_user() -> str | None:
    try:
        return psutil.Process().username()
    except (psutil.Error, KeyError):
        return None


def _parents(me: psutil.Process) -> list[psutil.Process]:
    try:
        return list(me.parents())
    except psutil.Error:
        return []
