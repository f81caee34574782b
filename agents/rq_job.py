"""The function an RQ job runs: open the signed envelope, run the agent, publish the result.

RQ stores a job as a function path plus JSON arguments: every task job is
``agents.rq_job.run_task(envelope)``. The worker process (``reaper worker``) installs a
:class:`JobContext` before it starts taking jobs, so the job function finds the agent, the
event bus and the signer without anything in the job naming them — a job can only say *what*
to do, never *with which credentials*.

Refusals (unsigned, tampered, expired) become error results with the refusal as their
``error_code``, so the engine counts them against the host like any failure and the operator
sees them in the mission; an envelope too broken to name a task is dead-lettered.

A task id runs once: before running, the job claims its task id (``JobContext.claim``); a
task id claimed already is skipped without a result (the engine applies one result per task
id, and the first run reports its own). The job's time limit bounds the work on the host and
is ended (``JobContext.disarm``) before the result is published, which is retried until it
lands: a result is never dropped while the worker lives.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.base import BaseAgent
from reaper_engine.log import get_logger
from reaper_engine.models import ResultEvent, ResultStatus, Task
from reaper_engine.signing import TaskRejectedError, TaskSigner

log = get_logger(__name__)

DeadLetterSink = Callable[[str, str], None]  # (raw payload, error)
RunClaim = Callable[[Task, str], bool]  # (task, token of this run) -> first run of the task?

_CLAIM_RETRY_FIRST, _CLAIM_RETRY_MAX = 0.1, 5.0


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
    # Claims a task id for one run (None: every task runs, as in tests without Redis).
    claim: RunClaim | None = None
    # Ends the running job's time limit (None: nothing to end).
    disarm: Callable[[], None] | None = None


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
        _disarm(context)
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
    claimed = True if context.claim is None else _claim(context, task)
    if claimed is None:  # the worker is stopping: the task's engine times it out
        log.warning("task_not_started", task_id=task.task_id, reason="worker stopping")
        return {"status": "not_started", "task_id": task.task_id}
    if not claimed:
        context.rejected["TASK_DUPLICATE"] += 1
        log.warning(
            "task_duplicate_skipped",
            task_id=task.task_id,
            mission_id=task.mission_id,
            job_id=context.current_job_id() if context.current_job_id else None,
        )
        return {"status": "duplicate", "task_id": task.task_id}
    result = agent.run_one(task, context.stop, before_publish=lambda: _disarm(context))
    return {"status": result.status.value, "task_id": task.task_id, "summary": result.summary}


def _claim(context: JobContext, task: Task) -> bool | None:
    """Whether this is the task's first run, asking Redis until it answers (None: stopped
    while asking).

    Nothing has touched the host yet, so waiting costs only time; once the deadline has
    passed, the agent refuses the task without touching the host and reports that, so the
    task goes ahead unclaimed then.
    """
    assert context.claim is not None
    token = uuid.uuid4().hex  # the same for every retry: a lost reply's claim is still ours
    delay = _CLAIM_RETRY_FIRST
    while True:
        try:
            return context.claim(task, token)
        except Exception as err:  # noqa: BLE001 - Redis away: retried below
            log.warning(
                "task_claim_failed",
                task_id=task.task_id,
                retry_in=delay,
                error=f"{type(err).__name__}: {err}",
            )
        if task.is_expired(context.agent.clock.now()):
            return True
        if context.stop.wait(delay):
            return None
        delay = min(delay * 2, _CLAIM_RETRY_MAX)


def _disarm(context: JobContext) -> None:
    if context.disarm is not None:
        context.disarm()
