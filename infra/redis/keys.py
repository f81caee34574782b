"""Every Redis key Reaper writes, in one place, under a configurable prefix.

RQ owns its own keys (``rq:queue:<name>``, ``rq:job:<id>``); only the queue *names* are ours.
Everything else lives under ``<prefix>:`` so that several deployments can share one Redis and
an operator can find (or flush) Reaper's keys with one pattern.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from reaper_engine.models import AgentType

DEFAULT_PREFIX = "reaper"
RESERVED_MISSION_ID = "dead"  # <prefix>:events:dead holds the event dead letters

# RQ accepts job ids of letters, digits, '_' and '-' only; host ids (and so task ids) may
# contain '.', e.g. "scan-web1.lab-3f2a".
_RQ_JOB_ID = re.compile(r"[A-Za-z0-9_-]+")
_NOT_RQ = re.compile(r"[^A-Za-z0-9_-]")


def queue_name(agent_type: AgentType) -> str:
    """The RQ queue of an agent type: ``reaper-linux``, ``reaper-macos``, ``reaper-windows``."""
    return agent_type.value


def is_rq_job_id(value: str) -> bool:
    """Whether RQ could have made ``value`` a job id (anything else is a foreign write)."""
    return _RQ_JOB_ID.fullmatch(value) is not None


def job_id_for(task_id: str) -> str:
    """The RQ job id of a task: the task id itself whenever RQ accepts it.

    Otherwise the id with every character RQ refuses replaced by '_', plus a digest of the
    original, so that two task ids that differ only in those characters stay two jobs.
    """
    if is_rq_job_id(task_id):
        return task_id
    digest = hashlib.sha256(task_id.encode("utf-8")).hexdigest()[:16]
    return f"{_NOT_RQ.sub('_', task_id)}-{digest}"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError(f"invalid Redis key prefix {self.prefix!r}")

    # -- task queue -------------------------------------------------------------------------

    def task_guard(self, task_id: str) -> str:
        """Set while a task is queued: the atomic dedupe of racing publishers."""
        return f"{self.prefix}:task:{task_id}:queued"

    def task_ran(self, task_id: str) -> str:
        """Set by the first worker to start a task: a task id runs at most once."""
        return f"{self.prefix}:task:{task_id}:ran"

    def publish_call(self, token: str) -> str:
        """A dispatch call's reply, kept a while so that a resent call writes nothing."""
        return f"{self.prefix}:publish:{token}"

    def dead_tasks(self, agent_type: AgentType) -> str:
        return f"{self.prefix}:dead:tasks:{queue_name(agent_type)}"

    def queue_wake(self, instance: str, slot: int) -> str:
        """A consumer thread's wake list: ``interrupt()`` pushes to it to end a BLPOP."""
        return f"{self.prefix}:wake:queue:{instance}:{slot}"

    # -- event bus --------------------------------------------------------------------------

    def events(self, mission_id: str) -> str:
        if mission_id == RESERVED_MISSION_ID:
            # Its stream would be the dead-letter stream of every mission.
            raise ValueError(f"mission id '{RESERVED_MISSION_ID}' is reserved on Redis")
        return f"{self.prefix}:events:{mission_id}"

    def dead_events(self) -> str:
        return f"{self.prefix}:events:{RESERVED_MISSION_ID}"

    def bus_wake(self, instance: str) -> str:
        """A bus instance's wake stream: ``interrupt()`` appends to it to end an XREAD."""
        return f"{self.prefix}:wake:bus:{instance}"

    # -- mission store ----------------------------------------------------------------------

    def mission(self, mission_id: str) -> str:
        """Hash: the mission's version, revision and head, and a field per host and task."""
        return f"{self.prefix}:mission:{mission_id}"

    def missions(self) -> str:
        """Sorted set of mission ids, scored by creation order."""
        return f"{self.prefix}:missions"

    def mission_seq(self) -> str:
        return f"{self.prefix}:missions:seq"

    def summaries(self) -> str:
        """Hash of mission id -> MissionSummary JSON, kept in step with every save."""
        return f"{self.prefix}:mission-summaries"
