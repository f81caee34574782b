"""What an agent sees of a process, and what detection says about it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from reaper_engine.models.enums import KillOutcome, Priority, ProcessState

START_TIME_TOLERANCE = 0.05
"""Seconds two start times may differ and still name the same process (clock-tick rounding)."""

NonNegInt = Annotated[int, Field(ge=0)]


class ProcessInfo(BaseModel):
    """One process as listed by a transport. Times are epoch seconds; memory is bytes.

    ``cpu_samples`` is left out of JSON: it is the agent's working memory, not part of what
    a result reports. A JSON round trip therefore gives back the same process *without* its
    samples (``cpu_samples == ()``), so window rules (``window_cpu``) cannot be evaluated on
    a decoded copy — evaluate them on the agent's side, where the samples were taken.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: NonNegInt
    ppid: NonNegInt = 0
    pgid: int | None = None
    sid: int | None = None
    uid: int | None = None  # None where the OS has no numeric uid (Windows)
    user: str | None = None
    name: str = ""
    exe: str | None = None
    cmdline: tuple[str, ...] = ()
    create_time: float = Field(ge=0)
    status: ProcessState = ProcessState.UNKNOWN
    cpu_percent: float = Field(default=0.0, ge=0)  # recent, 100 = one core
    cpu_time: float = Field(default=0.0, ge=0)  # user + system seconds over the lifetime
    rss: NonNegInt = 0
    is_kernel_thread: bool = False
    # (wall time, cpu_time) looks at this process, oldest first, the last being this one.
    # Filled by the agent's sampler; rules about windows (sustained load, idle time) read it.
    # Kept out of JSON: it is an agent's working memory, not part of what a result reports.
    cpu_samples: tuple[tuple[float, float], ...] = Field(default=(), exclude=True, repr=False)

    @property
    def command(self) -> str:
        """The full command line, or the name for processes without one (kernel threads)."""
        return " ".join(self.cmdline) if self.cmdline else self.name

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, now.timestamp() - self.create_time)

    def lifetime_cpu_percent(self, now: datetime) -> float:
        """CPU time divided by age: the average load since the process started."""
        age = self.age_seconds(now)
        return 100.0 * self.cpu_time / age if age > 0 else 0.0

    @property
    def rss_mb(self) -> float:
        return self.rss / (1024 * 1024)

    def window_cpu(self, seconds: float) -> tuple[float, float] | None:
        """(CPU%, cpu seconds used) over at least the last ``seconds``, if history covers it.

        Measured from the newest sample at least ``seconds`` older than the latest look.
        """
        if len(self.cpu_samples) < 2:
            return None
        wall_now, cpu_now = self.cpu_samples[-1]
        for wall, cpu in reversed(self.cpu_samples[:-1]):
            if wall_now - wall >= seconds:
                elapsed = wall_now - wall
                used = max(0.0, cpu_now - cpu)
                return (100.0 * used / elapsed if elapsed > 0 else 0.0), used
        return None


class ProcessIdentity(BaseModel):
    """(host, pid, start time): a PID alone is reused by the OS and never identifies a process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_id: str
    pid: NonNegInt
    create_time: float = Field(ge=0)

    def same_process(self, pid: int, create_time: float) -> bool:
        return pid == self.pid and abs(create_time - self.create_time) <= START_TIME_TOLERANCE


class Finding(BaseModel):
    """A process that a rule selected, with enough context to explain and audit the decision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: ProcessIdentity
    rule: str
    priority: Priority
    reason: str
    matched: tuple[str, ...] = ()  # the predicates that held, for `explain`
    command: str = ""
    name: str = ""
    user: str | None = None
    cpu_percent: float = 0.0
    rss_mb: float = 0.0
    age_seconds: float = 0.0
    protected_by: str | None = None  # set when a protection forbids signalling it
    report_only: bool = False  # the rule reports and never kills

    @property
    def killable(self) -> bool:
        return self.protected_by is None and not self.report_only


class KillRecord(BaseModel):
    """The terminator's account of one attempt to end a process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: ProcessIdentity
    rule: str
    priority: Priority
    command: str = ""
    outcome: KillOutcome
    signals: tuple[str, ...] = ()  # signals actually sent, in order
    detail: str = ""
    elapsed_seconds: float = 0.0
    dry_run: bool = False
    cpu_percent: float = 0.0
