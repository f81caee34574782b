"""``reaper worker``: an RQ worker for one agent type's queue.

It uses RQ's **SimpleWorker** (jobs run in the worker process) rather than the forking
``Worker`` (a fresh child per job), deliberately:

* throughput: a fork per job costs more than our jobs do (measured here: 55 vs 203 trivial
  jobs/s; docs/benchmarks.md has this machine's figures);
* state that must outlive a job lives in the worker: the CPU sampler's history (the
  ``duration_seconds`` and ``idle_seconds`` conditions need earlier samples of the same
  process), open transports, and a simulated host's table (a reap must be seen by the verify
  that follows). In a forked child all of that would be thrown away after every job;
* isolation is not what the fork would buy us: handlers are our own code, every step has a
  deadline, and RQ's job timeout (SIGALRM in the worker) still stops a runaway job.

SIGTERM (or Ctrl-C) is a warm shutdown: the current task finishes and its result is
published, then the worker exits. A second one exits at once; the task left behind is then
timed out by its mission engine and retried if the planner says so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from agents.base import BaseAgent
from agents.os_agents import AGENTS
from agents.rq_job import DeadLetterSink, JobContext, install
from agents.simulation import SimulatedLab
from agents.transports.local import LocalTransportFactory
from agents.transports.router import TransportRouter
from infra.audit_log import JsonLinesAuditSink
from infra.config_files import LoadedConfig
from reaper_engine.models import AgentType, TransportKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from overseer.fleet.setup import FleetSetup, RedisPorts

log = structlog.get_logger(__name__)


def worker_name(agent_type: AgentType) -> str:
    return f"{agent_type.value}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


def build_agent(
    agent_type: AgentType,
    ports: RedisPorts,
    loaded: LoadedConfig,
    *,
    env: Mapping[str, str],
    lab_dir: Path | None,
) -> tuple[BaseAgent, LocalTransportFactory]:
    """The agent for ``agent_type`` with this host's rules, protections and audit log."""
    config = loaded.config
    local = LocalTransportFactory.from_settings(config.scanner)
    router = TransportRouter(
        {TransportKind.SIMULATED: SimulatedLab(base_dir=lab_dir), TransportKind.LOCAL: local}
    )
    audit = JsonLinesAuditSink.from_settings(
        env,
        file=config.logging.file,
        max_size_mb=config.logging.max_size_mb,
        rotate_count=config.logging.rotate_count,
    )
    agent = AGENTS[agent_type](
        ports.queue,
        ports.bus,
        router,
        rules=config.rules,
        safety=config.safety,
        audit=audit,
        config_file=str(loaded.sources[-1]) if loaded.sources else None,
    )
    return agent, local


def guarded_worker_class() -> type[Any]:
    """RQ's SimpleWorker, refusing every job that does not call our task function.

    RQ runs whatever importable function a job names, with the job's arguments. Signing
    protects *our* function's input; this protects against a job naming another function
    (``os.system``, say): anyone who can write to Redis could otherwise run code on every
    worker. A refused job is dead-lettered and deleted, never executed.
    """
    from rq import SimpleWorker
    from rq.job import Job
    from rq.queue import Queue

    from infra.redis.queue import JOB_FUNCTION

    class GuardedWorker(SimpleWorker):
        dead_letter: DeadLetterSink | None = None

        def execute_job(self, job: Job, queue: Queue) -> None:
            try:
                func_name = job.func_name
                error = None if func_name == JOB_FUNCTION else f"job calls {func_name!r}"
            except Exception as err:  # noqa: BLE001 - undecodable job data: refuse it
                error = f"job data does not decode: {type(err).__name__}: {err}"
            if error is None:
                super().execute_job(job, queue)
                return
            log.error("job_refused", job_id=job.id, error=error, allowed=JOB_FUNCTION)
            if self.dead_letter is not None:
                self.dead_letter(_raw_job(job), f"JOB_REFUSED: {error}")
            job.delete()

    return GuardedWorker


def _raw_job(job: Any) -> str:
    """The job hash as text, for the dead letter (what a foreign writer put there)."""
    raw = job.connection.hgetall(job.key)
    return json.dumps(
        {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    )[:16384]


def run_worker(
    agent_type: AgentType,
    setup: FleetSetup,
    ports: RedisPorts,
    loaded: LoadedConfig,
    *,
    env: Mapping[str, str],
    burst: bool = False,
    name: str | None = None,
    lab_dir: Path | None = None,
    rq_log_level: str = "WARNING",
) -> int:
    """Take jobs from ``reaper-<agent_type>`` until stopped (or the queue is empty, with
    ``burst``); returns how many tasks this worker handled."""
    from rq import get_current_job
    from rq.serializers import JSONSerializer

    from infra.redis.keys import job_id_for

    agent, local = build_agent(agent_type, ports, loaded, env=env, lab_dir=lab_dir)
    queue = ports.queue

    def dead_letter(payload: str, error: str) -> None:
        queue.dead_letter_task(agent_type, payload, error)

    def current_job_id() -> str | None:
        job = get_current_job()
        return None if job is None else job.id

    context = JobContext(
        agent=agent,
        signer=setup.signer,
        dead_letter=dead_letter,
        current_job_id=current_job_id,
        job_id_for=job_id_for,
    )
    install(context)
    name = name or worker_name(agent_type)
    worker = guarded_worker_class()(
        [queue.rq_queue(agent_type)],
        connection=ports.client,
        serializer=JSONSerializer,
        name=name,
    )
    worker.dead_letter = dead_letter
    log.info(
        "worker_started",
        worker=name,
        queue=queue.queue_name(agent_type),
        burst=burst,
        signed=not setup.signer.insecure,
    )
    # RQ logs through the standard library; keep its chatter at the level asked for.
    logging.getLogger("rq").setLevel(rq_log_level)
    try:
        worker.work(burst=burst, logging_level=rq_log_level, with_scheduler=False)
    finally:
        context.stop.set()
        install(None)
        local.close()
        log.info(
            "worker_stopped",
            worker=name,
            handled=agent.handled,
            rejected=dict(context.rejected),
        )
    return agent.handled
