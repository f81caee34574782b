"""Honest fakes behind the project's interfaces, shared by the test suites."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.transports.base import ProcessListing, SignalDelivery, Transport
from infra.audit_log import MemoryAuditSink
from reaper_engine.models import (
    DiscoverData,
    Finding,
    Priority,
    ProcessIdentity,
    ProcessInfo,
)
from reaper_engine.safety import Vantage
from reaper_engine.signals import Signal
from tests.factories import T0, host_spec

ME = Vantage(user="noah", uid=1000)


@dataclass
class FakeTransport(Transport):
    """A dict of processes; signals remove them unless told otherwise. Never sleeps."""

    processes: dict[int, ProcessInfo] = field(default_factory=dict)
    ignores_sigterm: set[int] = field(default_factory=set)  # exits on SIGKILL only
    unkillable: set[int] = field(default_factory=set)  # survives every signal
    denied: dict[int, set[Signal]] = field(default_factory=dict)  # the OS refuses these
    vanish_before_signal: set[int] = field(default_factory=set)  # exits after the lookup
    exits_during_wait: set[int] = field(default_factory=set)  # exits just after wait_gone
    sent: list[tuple[int, Signal]] = field(default_factory=list)  # delivered signals
    attempts: list[tuple[int, float, Signal]] = field(default_factory=list)  # every request
    waits: list[float] = field(default_factory=list)
    lookups: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(host_spec("fake1"))

    def add(self, info: ProcessInfo) -> ProcessInfo:
        self.processes[info.pid] = info
        return info

    def _current(self, pid: int, create_time: float) -> ProcessInfo | None:
        info = self.processes.get(pid)
        if info is None or abs(info.create_time - create_time) > 0.05:
            return None
        return info

    def facts(self) -> DiscoverData:
        return DiscoverData(hostname="fake1", os="linux", process_count=len(self.processes))

    def vantage(self) -> Vantage:
        return ME

    def list_processes(self) -> ProcessListing:
        return ProcessListing(processes=tuple(self.processes.values()))

    def get_process(self, pid: int) -> ProcessInfo | None:
        self.lookups.append(pid)
        return self.processes.get(pid)

    def send_signal(self, pid: int, create_time: float, signal: Signal) -> SignalDelivery:
        self.attempts.append((pid, create_time, signal))
        if pid in self.vanish_before_signal:
            self.processes.pop(pid, None)
        if self._current(pid, create_time) is None:
            return SignalDelivery.GONE  # never signal a process that merely reuses the PID
        if signal in self.denied.get(pid, set()):
            return SignalDelivery.DENIED
        self.sent.append((pid, signal))
        if pid in self.unkillable:
            return SignalDelivery.SENT
        if signal is Signal.SIGKILL or pid not in self.ignores_sigterm:
            del self.processes[pid]
        return SignalDelivery.SENT

    def wait_gone(self, pid: int, create_time: float, timeout: float) -> bool:
        self.waits.append(timeout)
        gone = self._current(pid, create_time) is None
        if pid in self.exits_during_wait:
            self.processes.pop(pid, None)
        return gone


# The shipped list-backed sink: tests use the real thing.
ListSink = MemoryAuditSink


def finding_for(info: ProcessInfo, rule: str = "hung_test", **kw) -> Finding:
    return Finding(
        identity=ProcessIdentity(host_id="fake1", pid=info.pid, create_time=info.create_time),
        rule=rule,
        priority=kw.pop("priority", Priority.HIGH),
        reason=f"{rule}: test",
        command=info.command,
        name=info.name,
        user=info.user,
        cpu_percent=info.cpu_percent,
        rss_mb=info.rss_mb,
        age_seconds=info.age_seconds(T0),
        **kw,
    )


@dataclass
class Opens:
    """A TransportFactory that always opens the same transport."""

    transport: Transport

    def open(self, spec: object) -> Transport:
        return self.transport
