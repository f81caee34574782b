"""The transport interface: the few process operations an agent needs from a host.

Transports list processes and deliver signals; they decide nothing. Every signal request
carries the process's start time, and a transport delivers it only if the PID still belongs
to that process (as close to atomically as the host allows: a pidfd locally, a single
remote command that checks and signals over SSH/WinRM).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Protocol

from reaper_engine.models import DiscoverData, HostSpec, ProcessInfo
from reaper_engine.safety import Vantage
from reaper_engine.signals import Signal


class SignalDelivery(StrEnum):
    SENT = "sent"
    GONE = "gone"  # no such process, or the PID now belongs to another process
    DENIED = "denied"  # the OS refused (permissions)


@dataclass(frozen=True, slots=True)
class ProcessListing:
    processes: tuple[ProcessInfo, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count


class Transport(ABC):
    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec

    @abstractmethod
    def facts(self) -> DiscoverData: ...

    @abstractmethod
    def vantage(self) -> Vantage:
        """Who we act as on the host (for the other-user and self protections)."""

    @abstractmethod
    def list_processes(self) -> ProcessListing: ...

    @abstractmethod
    def get_process(self, pid: int) -> ProcessInfo | None: ...

    @abstractmethod
    def send_signal(self, pid: int, create_time: float, signal: Signal) -> SignalDelivery:
        """Signal ``pid`` only if it is still the process that started at ``create_time``."""

    @abstractmethod
    def wait_gone(self, pid: int, create_time: float, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit; True once it has."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class TransportFactory(Protocol):
    def open(self, spec: HostSpec) -> Transport: ...
