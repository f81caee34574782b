"""Mission and host state: what the engine owns and dashboards read."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PrivateAttr

from reaper_engine import SCHEMA_VERSION
from reaper_engine.clock import utcnow
from reaper_engine.models.enums import (
    OS,
    Action,
    HostStatus,
    MissionKind,
    MissionStatus,
    ResultStatus,
    TransportKind,
)
from reaper_engine.models.frozen import FrozenDict, FrozenJSON
from reaper_engine.models.inventory import HostSpec
from reaper_engine.models.process import Finding, KillRecord, ProcessIdentity
from reaper_engine.models.task import Task
from reaper_engine.models.tracked import TrackedDict, tracked

LAST_TASKS_KEPT = 20
_AT_ONCE = datetime.min.replace(tzinfo=UTC)  # the wakeup of a task due now
_LOCKED = operator.attrgetter("locked")
_PRIVATE = operator.attrgetter("__pydantic_private__")
_WATCH = operator.itemgetter("_watch")
_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)


class HostOutcome(StrEnum):
    """How a host ended the mission."""

    CLEAN = "clean"  # nothing rogue found
    FINDINGS = "findings"  # audit: rogue processes found, nothing touched
    REAPED = "reaped"  # every approved kill succeeded
    PARTIAL = "partial"  # some kills failed or processes survived
    FAILED = "failed"  # a task failed for good
    INCOMPLETE = "incomplete"  # stopped before it was scanned (e.g. the planner gave up)
    LOCKED = "locked"  # too many failures; no more tasks
    CANCELLED = "cancelled"


class MissionOptions(BaseModel):
    """Limits the engine enforces whatever the planner asks."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    dry_run: bool = False
    max_attempts: int = Field(default=3, ge=1, le=20)
    task_timeout_seconds: float = Field(default=60.0, gt=0, le=86400)
    retry_backoff_seconds: float = Field(default=1.0, ge=0, le=3600)
    retry_backoff_max_seconds: float = Field(default=30.0, ge=0, le=86400)
    kill_budget_per_host: int = Field(default=25, ge=0)
    planner: str = "rules"


class TaskRecord(BaseModel):
    """A finished task, kept so a repeated result is recognised and dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: str
    host_id: str
    action: Action
    attempt: int
    status: ResultStatus
    error_code: str | None = None
    summary: str = ""
    finished_at: AwareDatetime
    late_applied: bool = False  # a withdrawn task's real result arrived and was folded in


class PendingTask(BaseModel):
    """A task awaiting its result; ``dispatched_at`` is None while it waits out a backoff."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task
    dispatched_at: AwareDatetime | None = None

    def wakeup(self) -> datetime:
        """When the engine must next look at this task: its deadline once dispatched (it
        times out then); before, the end of its backoff, or at once if it has none."""
        if self.dispatched_at is not None:
            return self.task.deadline
        return self.task.not_before or _AT_ONCE


class HostState(BaseModel):
    """One host's part of a mission.

    Stores save a mission's hosts one by one and write only those that changed, which a
    host tells them itself: every assignment to a field is reported to where a store asked
    (``watch``) and counted (``changes``). So a host changes only by
    assigning its fields: the sequences are tuples and ``facts`` is read-only
    (models/frozen.py), so ``host.facts["k"] = v`` raises; write
    ``host.facts = {**host.facts, "k": v}``.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host_id: str
    os: OS
    transport: TransportKind
    spec: HostSpec
    last_status: HostStatus = HostStatus.UNKNOWN
    failure_count: int = 0
    max_failures: int = 3
    locked: bool = False
    lock_reason: str | None = None
    facts: FrozenJSON = Field(default_factory=FrozenDict)
    findings: tuple[Finding, ...] = ()
    kills: tuple[KillRecord, ...] = ()
    survivors: tuple[ProcessIdentity, ...] = ()  # reaped yet still alive
    last_tasks: tuple[str, ...] = ()
    outcome: HostOutcome | None = None
    outcome_detail: str = ""
    _changes: int = PrivateAttr(default=0)
    # Where a store wants to hear of changes: (the set to add to, the key to add).
    _watch: tuple[set[str], str] | None = PrivateAttr(default=None)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in type(self).model_fields:
            # Straight into pydantic's private storage: no validation, no recursion.
            private = self.__pydantic_private__
            if private is not None:
                private["_changes"] = private.get("_changes", 0) + 1
                watch = private.get("_watch")
                if watch is not None:
                    watch[0].add(watch[1])

    def watch(self, changed: set[str], key: str) -> None:
        """From now on, add ``key`` to ``changed`` whenever a field is assigned."""
        private = self.__pydantic_private__
        if private is not None:
            private["_watch"] = (changed, key)

    def watched_by(self, changed: set[str], key: str) -> bool:
        """Whether this host reports to ``changed``, as ``key``."""
        private = self.__pydantic_private__
        watch = private.get("_watch") if private else None
        return watch is not None and watch[0] is changed and watch[1] == key

    @staticmethod
    def all_watched_by(hosts: Mapping[str, HostState], changed: set[str]) -> bool:
        """``watched_by`` for every host under its key, looped in C: asked on every save."""
        try:
            watches = list(map(_WATCH, map(_PRIVATE, hosts.values())))
            return all(map(operator.is_, map(_FIRST, watches), itertools.repeat(changed))) and list(
                map(_SECOND, watches)
            ) == list(hosts)
        except (KeyError, TypeError):  # a host never watched (its watch None)
            return False

    # A copy is another object: it reports nowhere until a store asks it to.
    def __copy__(self) -> Self:
        copied = super().__copy__()
        copied._unwatch()
        return copied

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        copied = super().__deepcopy__(memo)
        copied._unwatch()
        return copied

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        private = state.get("__pydantic_private__")
        if private:
            state = {**state, "__pydantic_private__": {**private, "_watch": None}}
        return state

    def _unwatch(self) -> None:
        private = self.__pydantic_private__
        if private is not None:
            private["_watch"] = None

    def __eq__(self, other: object) -> bool:
        # ``changes`` is bookkeeping for stores, not state.
        if not isinstance(other, HostState):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, as BaseModel's default

    @property
    def changes(self) -> int:
        """How many field assignments this object has had (copies count their own)."""
        # Read straight from pydantic's private storage: ``self._changes`` goes through
        # BaseModel.__getattr__, several times slower, and stores ask this of every host.
        private = self.__pydantic_private__
        return int(private.get("_changes", 0)) if private else 0

    @classmethod
    def from_spec(cls, spec: HostSpec) -> HostState:
        return cls(
            host_id=spec.host_id,
            os=spec.os,
            transport=spec.transport,
            spec=spec,
            max_failures=spec.max_failures,
        )

    def remember_task(self, task_id: str) -> None:
        self.last_tasks = (*self.last_tasks, task_id)[-LAST_TASKS_KEPT:]

    @property
    def successful_kills(self) -> int:
        """Processes our signals ended (not those already gone, not rehearsals)."""
        return sum(1 for k in self.kills if k.outcome.is_kill and not k.dry_run)


class MissionCounters(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    tasks_dispatched: int = 0
    results_applied: int = 0
    errors: int = 0
    retries: int = 0
    timeouts: int = 0
    findings: int = 0
    kills: int = 0
    kill_failures: int = 0
    protected: int = 0


class MissionState(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    schema_version: int = SCHEMA_VERSION
    mission_id: str
    kind: MissionKind
    status: MissionStatus = MissionStatus.PENDING
    options: MissionOptions = Field(default_factory=MissionOptions)
    hosts: dict[str, HostState]
    # TrackedDicts (models/tracked.py): a store can learn which entries a change touched.
    pending_tasks: Annotated[dict[str, PendingTask], AfterValidator(tracked)] = Field(
        default_factory=TrackedDict
    )
    completed_tasks: Annotated[dict[str, TaskRecord], AfterValidator(tracked)] = Field(
        default_factory=TrackedDict
    )
    counters: MissionCounters = Field(default_factory=MissionCounters)
    created_at: AwareDatetime = Field(default_factory=utcnow)
    updated_at: AwareDatetime = Field(default_factory=utcnow)
    finished_at: AwareDatetime | None = None
    version: int = 0  # bumped by every save; the store rejects a save from a stale copy

    def pending_for(self, host_id: str) -> list[Task]:
        return [p.task for p in self.pending_tasks.values() if p.task.host_id == host_id]

    def next_wakeup(self) -> datetime | None:
        """The earliest time at which a pending task becomes due or overdue."""
        return min((p.wakeup() for p in self.pending_tasks.values()), default=None)


class MissionSummary(BaseModel):
    """The one-line view of a mission that lists and dashboards show."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mission_id: str
    kind: MissionKind
    status: MissionStatus
    hosts: int
    hosts_locked: int
    pending_tasks: int
    completed_tasks: int
    findings: int
    kills: int
    dry_run: bool
    created_at: AwareDatetime
    finished_at: AwareDatetime | None

    @classmethod
    def of(cls, state: MissionState) -> MissionSummary:
        return cls(
            mission_id=state.mission_id,
            kind=state.kind,
            status=state.status,
            hosts=len(state.hosts),
            # Asked on every save: counted in C, not a generator over a 1000-host mission.
            hosts_locked=operator.countOf(map(_LOCKED, state.hosts.values()), True),
            pending_tasks=len(state.pending_tasks),
            completed_tasks=len(state.completed_tasks),
            findings=state.counters.findings,
            kills=state.counters.kills,
            dry_run=state.options.dry_run,
            created_at=state.created_at,
            finished_at=state.finished_at,
        )
