"""A fixed worker name that survives a crash: liveness beats on RQ's worker key, and taking
over the registration of a worker that is gone.

RQ refuses a name whose registration has not expired (up to ``WORKER_TTL + 60`` s after a
SIGKILL). A thread (:class:`RqBeat`) beats on RQ's own worker key every ``BEAT_INTERVAL``
seconds, even while a job runs, promising the next beat within ``BEAT_PROMISE`` s (RQ's
convention: the key expires 60 s after the promised beat). A registration overdue by
``STALE_GRACE`` s -- or whose holder's pid is gone from this host -- is stale, and a new
worker of that name takes it over (:func:`claim_name`); ``reaper health --worker`` applies
the same rule (:class:`infra.redis.heartbeat.WorkerBeat`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infra.redis.heartbeat import RQ_HEARTBEAT_MARGIN_SECONDS, WORKER_GRACE_SECONDS, WorkerBeat
from reaper_engine.errors import ReaperError
from reaper_engine.log import get_logger

if TYPE_CHECKING:
    import redis

log = get_logger(__name__)

# Liveness. RQ's own heartbeat cannot say whether a SimpleWorker is alive: it does not beat
# while a job runs, nor while it waits in its dequeue (up to its worker_ttl - 15 s), and each
# beat promises the next one up to a job's time limit away. A thread of ours beats every
# BEAT_INTERVAL s on RQ's key instead, promising the next beat within BEAT_PROMISE s (one
# beat may be missed), and RQ's own beats are held to the same promise.
BEAT_INTERVAL = 5.0
BEAT_PROMISE = 2 * BEAT_INTERVAL
# RQ sets its worker key to expire this long after the promised beat.
RQ_TTL_MARGIN = int(RQ_HEARTBEAT_MARGIN_SECONDS)
# How late past its promise a worker may be before its name is taken over: the lateness at
# which ``reaper health --worker`` calls it dead, so the two never disagree.
STALE_GRACE = WORKER_GRACE_SECONDS
# How long a new worker waits for a holder of its name to fall overdue before giving up: a
# worker that died a moment ago is not overdue yet.
NAME_WAIT = BEAT_PROMISE + STALE_GRACE + BEAT_INTERVAL


class WorkerNameTakenError(ReaperError):
    """Another live worker holds the name this one was asked to use."""


def describe_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".rstrip(": ")


# -- liveness ---------------------------------------------------------------------------------


# KEYS: RQ's worker key, its executions set. ARGV: last_heartbeat as RQ writes it, TTL (s).
# Only a live registration is refreshed: one that registered its death, or that is gone,
# must not be brought back by a late beat.
_BEAT = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'death') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'last_heartbeat', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""


class RqBeat:
    """A thread that beats on RQ's worker key every BEAT_INTERVAL s while the process lives,
    whatever the main thread is doing (a long job, a blocking dequeue, a publish retry)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        from rq import Worker
        from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE

        self.name = name
        self.keys = [
            Worker.redis_worker_namespace_prefix + name,
            WORKER_EXECUTIONS_KEY_TEMPLATE.format(name),
        ]
        self._script = client.register_script(_BEAT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"beat-{self.name}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(BEAT_INTERVAL):
            self.beat()

    def beat(self) -> bool:
        """Beat once; False if Redis could not be told (or nothing is registered)."""
        from redis.exceptions import RedisError
        from rq.utils import now, utcformat

        try:
            done = self._script(
                keys=self.keys, args=[utcformat(now()), int(BEAT_PROMISE) + RQ_TTL_MARGIN]
            )
        except RedisError as err:
            if not self._failing:  # once per outage, not every few seconds
                log.warning("worker_beat_failed", worker=self.name, error=describe_error(err))
            self._failing = True
            return False
        self._failing = False
        return bool(done)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A beat in progress may wait out the client's retries (a Redis outage).
            self._thread.join(BEAT_INTERVAL + 30)
            self._thread = None


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: a check only, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class Registration:
    """RQ's record of a worker name: who holds it, and its heartbeat (``WorkerBeat``: the
    same alive rule as ``reaper health --worker``)."""

    fields: dict[str, str]
    beat: WorkerBeat

    @property
    def stopped(self) -> bool:
        return self.beat.stopped  # RQ registered its death: it exited cleanly

    @property
    def overdue(self) -> float:
        """Seconds past the beat the holder promised (<= 0: not late yet)."""
        return self.beat.overdue_by

    @property
    def alive(self) -> bool:
        return self.beat.alive

    @property
    def host(self) -> str:
        return self.fields.get("hostname", "")

    @property
    def pid(self) -> int | None:
        text = self.fields.get("pid", "")
        return int(text) if text.isdigit() else None


def registration(client: redis.Redis, name: str) -> Registration | None:
    """RQ's registration of worker ``name``; None if there is none.

    How late the holder is comes from the key's TTL, which the holder sets at each beat to
    its promise plus RQ_TTL_MARGIN: no two hosts' clocks are compared.
    """
    from rq import Worker

    from infra.redis.connection import as_text

    key = Worker.redis_worker_namespace_prefix + name
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(key)
    pipe.pttl(key)
    raw, pttl = pipe.execute()
    if not raw:
        return None
    fields = {as_text(k): as_text(v) for k, v in raw.items()}
    beat = WorkerBeat(
        name=name,
        last_heartbeat=fields.get("last_heartbeat"),
        stopped="death" in fields,
        expires_in=None if pttl < 0 else pttl / 1000,
    )
    return Registration(fields, beat)


def claim_name(
    client: redis.Redis,
    name: str,
    *,
    wait: float = NAME_WAIT,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Make sure RQ will let this process register as ``name``.

    Free if nobody holds it, or its holder registered its death. A registration is stale,
    and is taken over, if its holder is provably gone -- it ran on this host under a pid that
    no longer runs, or under this very process's pid (this process's own earlier run of the
    work loop, or a predecessor whose pid a restarted container reuses) -- or if its beat is
    overdue by more than STALE_GRACE s. A holder keeping its promises gets ``wait`` seconds
    to fall overdue (it may have died a moment ago); after that, WorkerNameTakenError.
    """
    deadline = time.monotonic() + wait
    waiting_logged = False
    while True:
        holder = registration(client, name)
        if holder is None or holder.stopped:
            return
        reason = None
        if holder.host == socket.gethostname() and holder.pid is not None:
            if holder.pid == os.getpid():
                reason = "registered under this process's own pid"
            elif not _pid_running(holder.pid):
                reason = f"its pid {holder.pid} no longer runs on this host"
        if reason is None and not holder.alive:
            reason = f"its heartbeat is {holder.overdue:.0f} s overdue"
        if reason is not None:
            _take_over(client, name, holder.fields, reason)
            return
        if time.monotonic() >= deadline or stopping():
            raise WorkerNameTakenError(
                f"a live worker is named {name!r} already (pid {holder.pid or '?'} on "
                f"{holder.host or '?'}, last heartbeat "
                f"{holder.fields.get('last_heartbeat', '?')}): stop it, or give this one "
                "another --name"
            )
        if not waiting_logged:
            log.warning(
                "worker_name_busy", worker=name, holder_host=holder.host, holder_pid=holder.pid
            )
            waiting_logged = True
        time.sleep(1.0)  # its TTL runs down on the server; look again


def _take_over(client: redis.Redis, name: str, holder: dict[str, str], reason: str) -> None:
    """Fail the stale registration's running jobs in RQ and register its death.

    Its tasks are not re-queued: their engine times them out and plans new attempts, and a
    re-run under the same task id would be refused anyway (``RqTaskQueue.claim_run``).
    """
    from rq import Queue, SimpleWorker
    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer

    stale = SimpleWorker.find_by_key(
        SimpleWorker.redis_worker_namespace_prefix + name,
        connection=client,
        serializer=JSONSerializer,
    )
    if stale is None:
        return
    failed = []
    for execution in stale.get_current_executions(refresh=True):
        try:
            job = Job.fetch(execution.job_id, connection=client, serializer=JSONSerializer)
        except Exception as err:  # noqa: BLE001 - gone or unreadable: nothing to fail
            log.info("stale_job_skipped", job_id=execution.job_id, error=describe_error(err))
            continue
        if job.get_status(refresh=False) != JobStatus.STARTED:
            continue
        queue = Queue(job.origin, connection=client, serializer=JSONSerializer)
        stale.handle_job_failure(
            job,
            queue,
            exc_string=f"worker {name} died while running this job ({reason})",
            execution=execution,
        )
        failed.append(job.id)
    stale.register_death()  # type: ignore[no-untyped-call]
    log.warning(
        "worker_name_taken_over",
        worker=name,
        reason=reason,
        previous_host=holder.get("hostname"),
        previous_pid=holder.get("pid"),
        previous_heartbeat=holder.get("last_heartbeat"),
        failed_jobs=failed,
    )
