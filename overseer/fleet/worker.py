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
  deadline, and the job's time limit (SIGALRM in the worker) still stops a runaway job.

SIGTERM (or Ctrl-C) is a warm shutdown: the current task finishes and its result is
published, then the worker exits. A second one exits at once; the task left behind is then
timed out by its mission engine and retried if the planner says so.

What RQ alone does not give us, and this module adds:

* **Jobs that do not load** (a corrupt hash, an id with no job) are dead-lettered and the
  worker carries on; RQ would end its work loop on the first one.
* **Reconnection.** RQ ends its work loop on a Redis error outside its blocking dequeue
  (heartbeat, suspension check, registry maintenance). ``run_worker`` then waits for Redis
  and starts the loop again; only a stop request ends it. Any other end of the loop is an
  error (:class:`WorkerFailedError`), so the command exits non-zero.
* **A fixed name survives a crash**: a liveness thread and the takeover of a dead
  holder's registration (``overseer.fleet.worker_names``).
* **The job's time limit is the task's deadline**, counted from when the job starts.
* **RQ has its own Redis client**: RQ raises its client's socket timeout above its blocking
  dequeue; the ports (bus, queue, heartbeats) keep the normal one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from agents.base import BaseAgent
from agents.os_agents import AGENTS
from agents.rq_job import JobContext, install
from agents.simulation import SimulatedLab
from agents.transports.local import LocalTransportFactory
from agents.transports.router import TransportRouter
from infra.audit_log import JsonLinesAuditSink
from infra.config_files import LoadedConfig
from overseer.fleet.worker_names import (
    BEAT_PROMISE,
    RQ_TTL_MARGIN,
    RqBeat,
    WorkerNameTakenError,
    claim_name,
    describe_error,
)
from reaper_engine.clock import Clock, SystemClock
from reaper_engine.errors import ReaperError
from reaper_engine.log import get_logger
from reaper_engine.models import AgentType, TransportKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    import redis

    from overseer.fleet.setup import FleetSetup, RedisPorts

log = get_logger(__name__)

JobSink = Callable[[str, str], None]  # (job id, error): record a job that will not run

# RQ's worker TTL. RQ blocks in its dequeue for WORKER_TTL - 15 s and raises its client's
# socket timeout to WORKER_TTL - 5 s: with RQ's default (420 s) a half-open connection would
# go unnoticed for 7 minutes. (How long a registration outlives its worker: BEAT_PROMISE.)
WORKER_TTL = 60
# The job's hard limit is the task's deadline plus this: nothing acts on a host after the
# deadline (the agent refuses an expired task, the terminator sends no signal past it), so
# the grace only lets a handler that stopped at its deadline report what it did.
DEADLINE_GRACE = 2.0
# Backoff between attempts to reach Redis again after the work loop ended on a Redis error.
RECONNECT_FIRST, RECONNECT_MAX = 0.5, 10.0
# RQ's own backoff inside its dequeue (default: up to 60 s, long after Redis is back).
RQ_CONNECTION_WAIT_MAX = 5.0
_STOP_POLL = 0.2


class WorkerFailedError(ReaperError):
    """The work loop ended without a stop request, on something a reconnect cannot fix."""


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


def task_time_left(envelope: object, now: datetime) -> float | None:
    """Seconds until the deadline of the task in ``envelope``; None if it names none.

    The envelope is not verified here: the figure only ever *shortens* a job's time limit,
    and a task whose signature fails never runs anyway (``run_task`` refuses it).
    """
    try:
        doc = json.loads(envelope)  # type: ignore[arg-type]
        task = json.loads(doc["task"])
        deadline = datetime.fromisoformat(task["deadline"])
        return (deadline - now).total_seconds()
    except (TypeError, ValueError, KeyError):
        return None


def job_time_limit(queued_limit: float | None, time_left: float | None) -> float | None:
    """The time limit to run a job with: the task's deadline (plus DEADLINE_GRACE) counted
    from now, never more than the limit the job was queued with. RQ counts a job's limit from
    the job's start, while the queue computed it when the task was published: a job that
    waited in the queue would otherwise run past its deadline by as long as it waited."""
    if time_left is None:
        return queued_limit
    limit = max(1, math.ceil(time_left + DEADLINE_GRACE))
    if queued_limit is None or queued_limit < 0 or limit < queued_limit:  # -1: no limit
        return limit
    return queued_limit


def guarded_worker_class(dead_letter_job: JobSink | None = None) -> type[Any]:
    """RQ's SimpleWorker, refusing every job that does not call our task function, and
    dead-lettering every job it cannot load (``dead_letter_job``; None: logged only).

    RQ runs whatever importable function a job names, with the job's arguments. Signing
    protects *our* function's input; this protects against a job naming another function
    (``os.system``, say): anyone who can write to Redis could otherwise run code on every
    worker. A refused job is dead-lettered and deleted, never executed.
    """
    from rq import SimpleWorker
    from rq.exceptions import DequeueTimeout, StopRequested
    from rq.job import Job
    from rq.queue import Queue
    from rq.serializers import Serializer
    from rq.timeouts import BaseDeathPenalty, JobTimeoutException

    from infra.redis.connection import is_connection_error
    from infra.redis.queue import JOB_FUNCTION
    from reaper_engine.errors import AgentError

    def unusable(job_id: str, error: str) -> None:
        log.error("job_refused", job_id=job_id, error=error)
        if dead_letter_job is not None:
            dead_letter_job(job_id, error)

    class GuardedQueue(Queue):
        @classmethod
        def _fetch_dequeued_job(
            cls,
            connection: redis.Redis,
            queue_key: str,
            job_id: str,
            job_class: type[Job] | None = None,
            serializer: Serializer | str | None = None,
            death_penalty_class: type[BaseDeathPenalty] | None = None,
        ) -> tuple[Job, Queue] | None:
            # RQ skips an id with no job silently and lets a hash it cannot load (a bad
            # status or date) end the work loop: both are foreign writes, recorded here.
            try:
                fetched = super()._fetch_dequeued_job(
                    connection,
                    queue_key,
                    job_id,
                    job_class=job_class,
                    serializer=serializer,
                    death_penalty_class=death_penalty_class,
                )
            except Exception as err:
                if is_connection_error(err):
                    raise
                unusable(job_id, f"JOB_MALFORMED: job hash does not load: {describe_error(err)}")
                return None
            if fetched is None:
                unusable(job_id, "JOB_MISSING: the queue lists a job id with no job behind it")
            return fetched

    class DeadlineError(AgentError, JobTimeoutException):
        """A job stopped at its task's deadline: reported like the agent's own refusal of
        an expired task, so the engine may plan another attempt."""

        error_code = "DEADLINE_EXCEEDED"
        retriable = True

    base_penalty: type[Any] = SimpleWorker.death_penalty_class

    class DeadlinePenalty(base_penalty):  # type: ignore[misc]
        """RQ's job time limit, which the worker can end early (before the publish)."""

        active: DeadlinePenalty | None = None

        def setup_death_penalty(self) -> None:
            super().setup_death_penalty()
            DeadlinePenalty.active = self

        def cancel_death_penalty(self) -> None:
            DeadlinePenalty.active = None
            super().cancel_death_penalty()

        def handle_death_penalty(self, signum: int, frame: FrameType | None) -> None:
            if self._exception is JobTimeoutException:
                raise DeadlineError(f"stopped at the task's deadline ({self._timeout} s limit)")
            super().handle_death_penalty(signum, frame)

    class GuardedWorker(SimpleWorker):
        queue_class = GuardedQueue
        death_penalty_class = DeadlinePenalty
        max_connection_wait_time = RQ_CONNECTION_WAIT_MAX
        clock: Clock = SystemClock()
        # Set when a RqBeat thread beats for this worker: RQ's own beats then promise no
        # more than it does, so the key always tells how soon a live worker beats again.
        beat_promise: float | None = None

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.stop_signalled = False  # SIGTERM/SIGINT seen: a requested end, not a failure
            self.failure: BaseException | None = None  # what ended the work loop, if anything

        def validate_queues(self) -> None:
            # Any RQ queue will do (GuardedQueue only changes how dequeued jobs are fetched).
            for queue in self.queues:
                if not isinstance(queue, Queue):
                    raise TypeError(f"{queue} is not an RQ queue")

        def request_stop(self, signum: int, frame: FrameType | None) -> None:
            self.stop_signalled = True
            super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

        # RQ's work loop logs and swallows whatever ends it; each step it calls records an
        # escaping error first, so run_worker can tell a Redis outage from a bug.

        def check_for_suspension(self, burst: bool) -> None:
            if self.stop_signalled:  # signalled between two runs of the work loop
                raise StopRequested()
            with _recording(self):
                super().check_for_suspension(burst)

        def run_maintenance_tasks(self) -> None:
            with _recording(self):
                super().run_maintenance_tasks()  # type: ignore[no-untyped-call]

        def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
            if self.beat_promise is not None:
                timeout = int(self.beat_promise) + RQ_TTL_MARGIN
            with _recording(self):
                super().heartbeat(timeout, pipeline)

        def register_birth(self) -> None:
            super().register_birth()  # type: ignore[no-untyped-call]
            if self.beat_promise is not None:
                self.connection.expire(self.key, int(self.beat_promise) + RQ_TTL_MARGIN)

        def dequeue_job_and_maintain_ttl(
            self, timeout: int | None, max_idle_time: int | None = None
        ) -> tuple[Job, Queue] | None:
            while True:
                with _recording(self):
                    try:
                        result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
                    except (StopRequested, DequeueTimeout):
                        raise
                    except Exception as err:
                        # Should RQ ever fetch past GuardedQueue, it still tags a job that
                        # fails to load with its id: record that job and go on.
                        job_id = getattr(err, "job_id", None)
                        if is_connection_error(err) or not isinstance(job_id, str):
                            raise
                        unusable(job_id, f"JOB_MALFORMED: job does not load: {describe_error(err)}")
                        continue
                self.failure = None  # Redis answered: an earlier error is behind us
                return result

        def execute_job(self, job: Job, queue: Queue) -> None:
            with _recording(self):
                self._execute_job(job, queue)

        def _execute_job(self, job: Job, queue: Queue) -> None:
            try:
                func_name, args, kwargs = job.func_name, job.args, job.kwargs
                if func_name != JOB_FUNCTION:
                    error: str | None = f"job calls {func_name!r}"
                elif kwargs or not isinstance(args, list | tuple) or len(args) != 1:
                    error = "job arguments are not one envelope"
                else:
                    error = None
            except Exception as err:  # noqa: BLE001 - undecodable job data: refuse it
                error = f"job data does not decode: {type(err).__name__}: {err}"
            if error is not None:
                if dead_letter_job is not None:
                    unusable(job.id, f"JOB_REFUSED: {error}")
                else:
                    log.error("job_refused", job_id=job.id, error=error, allowed=JOB_FUNCTION)
                    job.delete()
                return
            job.timeout = job_time_limit(job.timeout, task_time_left(args[0], self.clock.now()))
            super().execute_job(job, queue)

        @staticmethod
        def disarm_job_timeout() -> None:
            """End the running job's time limit (the job function calls this before it
            publishes: the limit bounds the work on the host, not the result's delivery)."""
            penalty = DeadlinePenalty.active
            if penalty is not None:
                penalty.cancel_death_penalty()

    return GuardedWorker


@contextlib.contextmanager
def _recording(worker: Any) -> Iterator[None]:
    """Note an error escaping a step of RQ's work loop on ``worker.failure``, and re-raise it
    (RQ's loop only logs what ends it)."""
    try:
        yield
    except Exception as err:
        if type(err).__name__ not in ("StopRequested", "DequeueTimeout"):  # RQ's control flow
            worker.failure = err
        raise


# -- the command ------------------------------------------------------------------------------


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
    ``burst``); returns how many tasks this worker handled.

    Raises WorkerNameTakenError if a live worker has ``name``, and WorkerFailedError if the
    work loop ended for any reason but a stop request, the end of a burst, or a Redis outage
    (which is waited out).
    """
    from rq import get_current_job
    from rq.serializers import JSONSerializer

    from infra.redis.connection import connect
    from infra.redis.keys import job_id_for

    agent, local = build_agent(agent_type, ports, loaded, env=env, lab_dir=lab_dir)
    queue = ports.queue
    name = name or worker_name(agent_type)

    def dead_letter(payload: str, error: str) -> None:
        queue.dead_letter_task(agent_type, payload, error)

    def dead_letter_job(job_id: str, error: str) -> None:
        queue.dead_letter_job(agent_type, job_id, error)

    def current_job_id() -> str | None:
        job = get_current_job()
        return None if job is None else job.id

    # RQ's own client: RQ raises its client's socket timeout above its long blocking dequeue
    # (WORKER_TTL - 5 s), which must not leak into the bus's and the queue's commands.
    rq_client = connect(setup.redis_url)
    worker = guarded_worker_class(dead_letter_job)(
        [queue.queue_name(agent_type)],
        connection=rq_client,
        serializer=JSONSerializer,
        name=name,
        worker_ttl=WORKER_TTL,
    )
    worker.clock = agent.clock
    context = JobContext(
        agent=agent,
        signer=setup.signer,
        dead_letter=dead_letter,
        current_job_id=current_job_id,
        job_id_for=job_id_for,
        claim=lambda task, token: queue.claim_run(task, f"{name}:{token}"),
        disarm=worker.disarm_job_timeout,
    )
    install(context)
    beat = RqBeat(ports.client, name)
    worker.beat_promise = BEAT_PROMISE
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
        _serve(worker, rq_client, beat, setup.redis_url, burst, rq_log_level)
    finally:
        context.stop.set()
        install(None)
        beat.stop()
        local.close()
        rq_client.close()
        log.info(
            "worker_stopped",
            worker=name,
            handled=agent.handled,
            rejected=dict(context.rejected),
        )
    return agent.handled


def _serve(
    worker: Any,
    rq_client: redis.Redis,
    beat: RqBeat,
    url: str,
    burst: bool,
    rq_log_level: str,
) -> None:
    """Run RQ's work loop until a stop request (or the end of a burst), again after every
    Redis outage that ended it."""
    from infra.redis.connection import is_connection_error

    delay = RECONNECT_FIRST
    while True:
        worker.failure = None
        started = time.monotonic()
        try:
            claim_name(rq_client, worker.name, stopping=lambda: worker.stop_signalled)
            beat.start()
            worker.work(burst=burst, logging_level=rq_log_level, with_scheduler=False)
        except WorkerNameTakenError:
            raise
        except Exception as err:  # noqa: BLE001 - judged below, like the loop's own failures
            # Registering (birth, death) runs outside RQ's loop and raises straight out; a
            # failed teardown leaves RQ's command subscription running.
            worker.failure = err
            _drop_subscription(worker)
        failure: BaseException | None = worker.failure
        if worker.stop_signalled:
            return
        if failure is None:
            if burst:
                return
            raise WorkerFailedError(f"worker {worker.name}: RQ's work loop ended by itself")
        if not is_connection_error(failure):
            raise WorkerFailedError(
                f"worker {worker.name} stopped on an unexpected error: {describe_error(failure)}"
            ) from failure
        if time.monotonic() - started > 10 * RECONNECT_MAX:
            delay = RECONNECT_FIRST  # a new outage after a good run starts the backoff over
        log.warning("worker_redis_lost", worker=worker.name, error=describe_error(failure))
        if not _wait_for_redis(worker, url, delay):
            return
        log.info("worker_reconnected", worker=worker.name)
        delay = min(delay * 2, RECONNECT_MAX)


def _drop_subscription(worker: Any) -> None:
    """Stop the thread of RQ's command channel (the next work loop subscribes anew)."""
    thread, pubsub = worker.pubsub_thread, worker.pubsub
    worker.pubsub_thread = worker.pubsub = None
    if thread is not None:
        thread.stop()
        thread.join(timeout=1)
    if pubsub is not None:
        with contextlib.suppress(Exception):  # Redis may be away: the socket goes anyway
            pubsub.close()


def _wait_for_redis(worker: Any, url: str, first_delay: float) -> bool:
    """Back off until Redis answers (True) or a stop is signalled (False).

    RQ's signal handlers are replaced meanwhile: RQ's own would talk to Redis, or raise
    into whatever runs. The first SIGTERM/SIGINT ends the wait, a second one exits at once.
    """
    from redis.exceptions import RedisError

    from infra.redis.connection import connect

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if worker.stop_signalled:
            raise SystemExit(1)
        worker.stop_signalled = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # A client of its own, without retries: each attempt is one quick PING.
    probe = connect(url, retries=0, socket_connect_timeout=2.0, socket_timeout=2.0)
    delay = first_delay
    try:
        while True:
            if not _sleep(delay, lambda: bool(worker.stop_signalled)):
                return False
            try:
                probe.ping()
            except RedisError as err:
                log.info("worker_redis_unavailable", error=describe_error(err), retry_in=delay)
            else:
                return True
            delay = min(delay * 2, RECONNECT_MAX)
    finally:
        probe.close()


def _sleep(seconds: float, stopping: Callable[[], bool]) -> bool:
    """Sleep ``seconds`` in short slices; False as soon as ``stopping()`` (a signal handler
    sets a flag: a threading.Event set from a handler can deadlock)."""
    end = time.monotonic() + seconds
    while not stopping():
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, _STOP_POLL))
    return False
