"""The function an RQ job runs: open the signed envelope, run the agent, publish the result.

RQ stores a job as a function path plus JSON arguments: every task job is
``agents.rq_job.run_task(envelope)``. The worker process (``reaper worker``) installs a
:class:`JobContext` before it starts taking jobs, so the job function finds the agent, the
event bus and the signer without anything in the job naming them — a job can only say *what*
to do, never *with which credentials*.

Refusals (unsigned, tampered, expired) become error results with the refusal as their
``error_code``, so the engine counts them against the host like any failure and the operator
sees them in the mission; an envelope too broken to name a task is dead-lettered.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from agents.base import BaseAgent
from reaper_engine.models import ResultEvent, ResultStatus
from reaper_engine.signing import TaskRejectedError, TaskSigner

log = structlog.get_logger(__name__)

DeadLetterSink = Callable[[str, str], None]  # (raw payload, error)


@dataclass
class JobContext:
    agent: BaseAgent
    signer: TaskSigner
    dead_letter: DeadLetterSink
    stop: threading.Event = field(default_factory=threading.Event)
    rejected: Counter[str] = field(default_factory=Counter)
    # The running job's id, and the id a task's job must have: a signed envelope copied
    # under another job id (a replay) is refused without a result, since the task's real
    # job may still run.
    current_job_id: Callable[[], str | None] | None = None
    job_id_for: Callable[[str], str] | None = None


_context: JobContext | None = None


def install(context: JobContext | None) -> None:
    """Make ``context`` the one jobs in this process run with (None: uninstall)."""
    global _context  # noqa: PLW0603 - one worker per process; RQ calls a plain function
    _context = context


def run_task(envelope: Any) -> dict[str, Any]:
    """Run one task job; the returned summary is what RQ keeps as the job's result."""
    context = _context
    if context is None:
        # Only a worker started by `reaper worker` may run these jobs.
        raise RuntimeError("no job context: run task jobs with `reaper worker`")
    agent = context.agent
    if not isinstance(envelope, str):
        context.rejected["TASK_MALFORMED"] += 1
        context.dead_letter(repr(envelope)[:4096], "job argument is not an envelope string")
        log.error("task_rejected", code="TASK_MALFORMED", reason="argument is not a string")
        return {"status": "rejected", "code": "TASK_MALFORMED"}
    try:
        task = context.signer.open(envelope, agent.clock.now())
    except TaskRejectedError as err:
        context.rejected[err.code] += 1
        log.error(
            "task_rejected",
            code=err.code,
            reason=str(err),
            task_id=err.task.task_id if err.task else None,
            rejected_total=sum(context.rejected.values()),
        )
        if err.task is None:
            context.dead_letter(envelope, f"{err.code}: {err}")
            return {"status": "rejected", "code": err.code}
        refusal = ResultEvent.for_task(
            err.task,
            ResultStatus.ERROR,
            summary=f"worker refused the task: {err}",
            error_code=err.code,
            # An expired task may be re-planned; a forged or unsigned one never will be.
            retriable=err.code == "TASK_EXPIRED",
            ts=agent.clock.now(),
        )
        agent.publish(refusal, context.stop)
        return {"status": "rejected", "code": err.code, "task_id": err.task.task_id}
    if context.current_job_id is not None and context.job_id_for is not None:
        job_id, expected = context.current_job_id(), context.job_id_for(task.task_id)
        if job_id != expected:
            context.rejected["TASK_JOB_MISMATCH"] += 1
            log.error(
                "task_rejected", code="TASK_JOB_MISMATCH", job_id=job_id, task_id=task.task_id
            )
            context.dead_letter(envelope, f"TASK_JOB_MISMATCH: task {task.task_id} in job {job_id}")
            return {"status": "rejected", "code": "TASK_JOB_MISMATCH"}
    result = agent.run_one(task, context.stop)
    return {"status": result.status.value, "task_id": task.task_id, "summary": result.summary}
