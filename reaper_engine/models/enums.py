"""Closed vocabularies shared by every model: statuses, actions, OS and agent types."""

from __future__ import annotations

from enum import StrEnum


class OS(StrEnum):
    LINUX = "linux"
    MACOS = "macos"
    WINDOWS = "windows"

    @property
    def agent_type(self) -> AgentType:
        return AgentType(f"reaper-{self.value}")


class AgentType(StrEnum):
    """One task queue per agent type."""

    LINUX = "reaper-linux"
    MACOS = "reaper-macos"
    WINDOWS = "reaper-windows"

    @property
    def os(self) -> OS:
        return OS(self.value.removeprefix("reaper-"))


class TransportKind(StrEnum):
    SIMULATED = "simulated"
    LOCAL = "local"
    SSH = "ssh"
    WINRM = "winrm"


class Action(StrEnum):
    DISCOVER = "discover"  # host facts: OS, version, CPU count, process count
    SCAN = "scan"  # list processes, apply rules, report findings (read-only)
    REAP = "reap"  # re-scan and terminate approved findings that still match
    VERIFY = "verify"  # re-scan: are the reaped processes gone?


class ResultStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    PARTIAL = "partial"


class HostStatus(StrEnum):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    ERROR = "error"
    LOCKED = "locked"


class MissionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (MissionStatus.COMPLETED, MissionStatus.FAILED, MissionStatus.CANCELLED)


class MissionKind(StrEnum):
    AUDIT = "audit"  # discover -> scan; read-only
    REAP = "reap"  # discover -> scan -> reap -> verify


class Priority(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 is the most urgent; rules are evaluated in ascending rank."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}


class ProcessState(StrEnum):
    RUNNING = "running"
    SLEEPING = "sleeping"
    DISK_SLEEP = "disk-sleep"
    STOPPED = "stopped"
    ZOMBIE = "zombie"
    IDLE = "idle"
    DEAD = "dead"
    UNKNOWN = "unknown"


class KillOutcome(StrEnum):
    """What happened when the terminator was asked to end a process."""

    TERMINATED = "terminated"  # exited after the first signal
    KILLED = "killed"  # needed the fallback signal
    ALREADY_GONE = "already_gone"  # exited, or its PID now belongs to another process
    PROTECTED = "protected"  # a protection refused it
    DENIED = "denied"  # the OS refused the signal (permissions)
    FAILED = "failed"  # still alive after every signal
    DRY_RUN = "dry_run"  # would have been signalled

    @property
    def is_success(self) -> bool:
        """The process is gone (whoever ended it)."""
        return self in (KillOutcome.TERMINATED, KillOutcome.KILLED, KillOutcome.ALREADY_GONE)

    @property
    def is_kill(self) -> bool:
        """We ended it: a signal of ours made it exit."""
        return self in (KillOutcome.TERMINATED, KillOutcome.KILLED)

    @property
    def uses_budget(self) -> bool:
        """A signal was sent, or would have been in a dry run."""
        return self in (
            KillOutcome.TERMINATED,
            KillOutcome.KILLED,
            KillOutcome.FAILED,
            KillOutcome.DENIED,
            KillOutcome.DRY_RUN,
        )
