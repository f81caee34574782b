"""Work for an agent, and the result it reports back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from reaper_engine import SCHEMA_VERSION
from reaper_engine.clock import utcnow
from reaper_engine.models.enums import Action, AgentType, ResultStatus
from reaper_engine.models.frozen import FrozenDict, FrozenJSON
from reaper_engine.models.inventory import HostSpec

TAIL_CHARS = 4000
"""How much of a command's stdout/stderr a result carries; the rest goes to logs_ref."""


class Task(BaseModel):
    """One action on one host. Immutable: a retry is a new task with attempt + 1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    task_id: str
    mission_id: str
    host_id: str
    agent_type: AgentType
    action: Action
    params: FrozenJSON = Field(default_factory=FrozenDict)
    attempt: int = Field(default=1, ge=1)
    created_at: AwareDatetime = Field(default_factory=utcnow)
    not_before: AwareDatetime | None = None  # backoff: do not dispatch before this
    deadline: AwareDatetime
    dry_run: bool = False
    target: HostSpec  # how to reach the host; agents need nothing else

    def is_expired(self, now: datetime) -> bool:
        return now >= self.deadline

    def is_due(self, now: datetime) -> bool:
        return self.not_before is None or now >= self.not_before


class ResultEvent(BaseModel):
    """What an agent reports for one task (the fields of the swarm design, plus attempt)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    event_type: Literal["task.result"] = "task.result"
    task_id: str
    mission_id: str
    host_id: str
    agent_type: AgentType
    action: Action
    status: ResultStatus
    summary: str = ""
    stdout_tail: str = ""
    stderr_tail: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    logs_ref: str | None = None
    ts: AwareDatetime = Field(default_factory=utcnow)
    retriable: bool = False
    error_code: str | None = None
    attempt: int = Field(default=1, ge=1)

    @field_validator("stdout_tail", "stderr_tail")
    @classmethod
    def _keep_tail(cls, value: str) -> str:
        return value[-TAIL_CHARS:]

    @classmethod
    def for_task(cls, task: Task, status: ResultStatus, **fields: Any) -> ResultEvent:
        """A result addressed to ``task``: ids, action and attempt copied over."""
        return cls(
            task_id=task.task_id,
            mission_id=task.mission_id,
            host_id=task.host_id,
            agent_type=task.agent_type,
            action=task.action,
            attempt=task.attempt,
            status=status,
            **fields,
        )
