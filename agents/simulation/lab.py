"""Simulated hosts: a process table in memory, where signals remove rows.

A host can be told to fail (``options.fail``): ``unreachable`` raises HostUnreachableError on
every call; ``flaky:N`` fails the first N calls, then recovers. The lab keeps one SimulatedHost
per host id so a scan, a reap and a verify all see the same table.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agents.simulation.table import ProcessTable, SimProcess, load_table
from agents.transports.base import ProcessListing, SignalDelivery, Transport
from reaper_engine.clock import Clock, SystemClock
from reaper_engine.errors import ConfigError, HostUnreachableError
from reaper_engine.models import DiscoverData, HostSpec, ProcessInfo
from reaper_engine.models.process import START_TIME_TOLERANCE
from reaper_engine.safety import Vantage
from reaper_engine.signals import Signal

_DEFAULT_TABLES = {"linux": "linux-incident", "macos": "macos-dev", "windows": "windows-dev"}


class SimulatedHost:
    def __init__(self, spec: HostSpec, table: ProcessTable, clock: Clock) -> None:
        self.spec = spec
        self.table = table
        self._lock = threading.Lock()
        started = clock.now().timestamp()
        self._procs: dict[int, tuple[ProcessInfo, SimProcess]] = {
            p.pid: (_to_info(p, started), p) for p in table.processes
        }
        self.signals_received: list[tuple[int, Signal]] = []
        self._fail_mode, self._fail_left = _parse_fail(spec)
        self.latency = _parse_latency(spec)

    def check_reachable(self) -> None:
        with self._lock:
            if self._fail_mode == "unreachable":
                raise HostUnreachableError(f"{self.spec.host_id}: connection timed out")
            if self._fail_mode == "flaky" and self._fail_left > 0:
                self._fail_left -= 1
                raise HostUnreachableError(f"{self.spec.host_id}: connection reset (flaky)")
        if self.latency:
            time.sleep(self.latency)  # a slow link: each call to the host takes this long

    def processes(self) -> tuple[ProcessInfo, ...]:
        with self._lock:
            return tuple(info for info, _ in self._procs.values())

    def get(self, pid: int) -> ProcessInfo | None:
        with self._lock:
            entry = self._procs.get(pid)
            return entry[0] if entry else None

    def signal(self, pid: int, create_time: float, sig: Signal) -> SignalDelivery:
        with self._lock:
            entry = self._procs.get(pid)
            if entry is None or abs(entry[0].create_time - create_time) > START_TIME_TOLERANCE:
                return SignalDelivery.GONE
            info, sim = entry
            if self.spec.user and info.user and info.user.lower() != self.spec.user.lower():
                return SignalDelivery.DENIED  # as the OS would for another user's process
            self.signals_received.append((pid, sig))
            if sig is Signal.SIGKILL or not sim.ignores_sigterm:
                del self._procs[pid]
            return SignalDelivery.SENT

    def uid_of(self, user: str | None) -> int | None:
        if user is None:
            return None
        for proc in self.table.processes:
            if proc.user == user and proc.uid is not None:
                return proc.uid
        return None


class SimulatedLab:
    """All simulated hosts of a process (thread-safe); hosts are created on first use."""

    def __init__(self, clock: Clock | None = None, base_dir: Path | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.base_dir = base_dir
        self._hosts: dict[str, SimulatedHost] = {}
        self._lock = threading.Lock()

    def host(self, spec: HostSpec) -> SimulatedHost:
        with self._lock:
            host = self._hosts.get(spec.host_id)
            if host is None:
                ref = str(spec.options.get("process_table", _DEFAULT_TABLES[spec.os.value]))
                host = SimulatedHost(spec, load_table(ref, self.base_dir), self.clock)
                self._hosts[spec.host_id] = host
            return host

    def open(self, spec: HostSpec) -> Transport:
        return SimulatedTransport(spec, self.host(spec), self.clock)


class SimulatedTransport(Transport):
    def __init__(self, spec: HostSpec, host: SimulatedHost, clock: Clock) -> None:
        super().__init__(spec)
        self.host = host
        self.clock = clock

    def facts(self) -> DiscoverData:
        self.host.check_reachable()
        table = self.host.table
        return DiscoverData(
            hostname=table.hostname or self.spec.host_id,
            os=self.spec.os.value,
            os_version=table.os_version,
            cpu_count=table.cpu_count,
            process_count=len(self.host.processes()),
            agent_user=self.spec.user,
        )

    def vantage(self) -> Vantage:
        return Vantage(user=self.spec.user, uid=self.host.uid_of(self.spec.user))

    def list_processes(self) -> ProcessListing:
        self.host.check_reachable()
        return ProcessListing(processes=self.host.processes())

    def get_process(self, pid: int) -> ProcessInfo | None:
        self.host.check_reachable()
        return self.host.get(pid)

    def send_signal(self, pid: int, create_time: float, signal: Signal) -> SignalDelivery:
        self.host.check_reachable()
        return self.host.signal(pid, create_time, signal)

    def wait_gone(self, pid: int, create_time: float, timeout: float) -> bool:
        # Simulated processes exit at once or never: there is nothing to wait for.
        current = self.host.get(pid)
        return current is None or abs(current.create_time - create_time) > START_TIME_TOLERANCE


def _to_info(proc: SimProcess, started: float) -> ProcessInfo:
    create_time = started - proc.age_seconds
    cpu_time = proc.cpu_time_seconds
    if cpu_time is None:
        cpu_time = proc.age_seconds * proc.cpu_percent / 100
    return ProcessInfo(
        pid=proc.pid,
        ppid=proc.ppid,
        pgid=proc.pid,
        uid=proc.uid,
        user=proc.user,
        name=proc.name,
        exe=proc.cmdline[0] if proc.cmdline else None,
        cmdline=proc.cmdline,
        create_time=max(0.0, create_time),
        status=proc.status,
        cpu_percent=proc.cpu_percent,
        cpu_time=cpu_time,
        rss=int(proc.rss_mb * 1024 * 1024),
        is_kernel_thread=proc.kernel_thread,
    )


def _parse_latency(spec: HostSpec) -> float:
    raw = spec.options.get("latency_seconds", 0)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 60:
        raise ConfigError(
            "options.latency_seconds must be a number of seconds from 0 to 60",
            source=spec.host_id,
            key="options.latency_seconds",
        )
    return float(raw)


def _parse_fail(spec: HostSpec) -> tuple[str | None, int]:
    raw = spec.options.get("fail")
    if raw is None:
        return None, 0
    text = str(raw)
    if text == "unreachable":
        return "unreachable", 0
    if text.startswith("flaky:") and text[6:].isdigit():
        return "flaky", int(text[6:])
    raise ConfigError(
        "options.fail must be 'unreachable' or 'flaky:N'", source=spec.host_id, key="options.fail"
    )
