"""TaskQueue on RQ: one RQ queue per agent type, jobs carrying signed task envelopes as JSON.

Each task becomes an RQ job (id = the task id, see ``job_id_for``) that calls
``agents.rq_job.run_task(envelope)``: ``reaper worker`` runs it with RQ's own machinery
(timeouts, registries, retries of the worker). Job data is serialised with RQ's
JSONSerializer; pickle is never used, since whoever can write to Redis could otherwise run
code in every worker.

``consume`` is the pull path (in-process agent pools, the contract suite): it pops job ids
from the RQ queue's list itself, checks the job and its envelope, and deletes the job it
takes. A job that is missing, unreadable, calls another function, has other arguments, or
whose envelope the signer refuses is dead-lettered to ``<prefix>:dead:tasks:<queue>`` and
the consumer keeps waiting. An authentic task whose deadline has passed is handed out like
any other, as the in-memory queue does: the agent refuses it with DEADLINE_EXCEEDED, and
that result is how the engine learns of it.

Waiting. A consumer blocks in ``BLPOP`` on the queue's list and a wake list of its own
thread; ``interrupt()`` pushes to the wake list of every consumer in progress. Registration
and the push happen under one lock, with a generation counter, so an interrupt is never lost
between a consumer's last check and its BLPOP reaching the server. An interrupt is also
sticky per thread (``reaper_engine.ports.Interrupts``): a thread that was not consuming when
it fired has its next consume take only what is queued, without blocking. That check and
the registration are one step under the lock, so every interrupt reaches every thread.
"""

# redis and rq are imported where they are used: nothing may import them at module level
# (tests/unit/test_layout.py), so that only commands that use Redis pay for them.
# ruff: noqa: PLC0415

from __future__ import annotations

import itertools
import json
import math
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from infra.redis.connection import as_text, blocking_slice
from infra.redis.keys import DEFAULT_PREFIX, RedisKeys, is_rq_job_id, job_id_for, queue_name
from infra.redis.rq_jobs import JobWriter, NewJob
from reaper_engine import SCHEMA_VERSION
from reaper_engine.clock import Clock, SystemClock
from reaper_engine.models import AgentType, Task
from reaper_engine.ports import DeadLetter, Interrupts, TaskQueue
from reaper_engine.signing import TaskRejectedError, TaskSigner

if TYPE_CHECKING:
    import redis
    import rq

log = structlog.get_logger(__name__)

JOB_FUNCTION = "agents.rq_job.run_task"  # a dotted path: RQ imports it in the worker only
DEFAULT_RESULT_TTL = 3600
DEFAULT_FAILURE_TTL = 24 * 3600
DEFAULT_DEAD_LETTER_CAP = 10_000
# How long a run claim outlives its task's deadline. Past the deadline every copy of the task
# is refused as expired anyway; the margin covers clocks of workers that disagree.
RUN_CLAIM_MARGIN = 300
_RAW_JOB_CHARS = 16384
_WAKE_TTL = 3600  # a wake list nobody popped (its process died) goes away by itself
_DISCARD_CHUNK = 500

# KEYS: the queue keys (ARGV[1] of them), then a (job key, guard key) pair per job.
# ARGV: number of queues, the queue names, then the job ids.
# A job is removed only from the queue its hash names as origin, and only if still listed
# there: a job a worker or consumer has taken is not discardable.
_DISCARD = """
local nq = tonumber(ARGV[1])
local removed = 0
for i = 1, #ARGV - 1 - nq do
  local job_key = KEYS[nq + 2 * i - 1]
  local guard_key = KEYS[nq + 2 * i]
  local job_id = ARGV[1 + nq + i]
  local origin = redis.call('HGET', job_key, 'origin')
  for q = 1, nq do
    if origin == ARGV[1 + q] and redis.call('LREM', KEYS[q], 1, job_id) > 0 then
      redis.call('DEL', job_key, guard_key)
      removed = removed + 1
    end
  end
end
return removed
"""


class RqTaskQueue(TaskQueue):
    def __init__(
        self,
        client: redis.Redis,
        signer: TaskSigner,
        clock: Clock | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        result_ttl: int = DEFAULT_RESULT_TTL,
        failure_ttl: int = DEFAULT_FAILURE_TTL,
        dead_letter_cap: int = DEFAULT_DEAD_LETTER_CAP,
    ) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        self._client = client
        self._signer = signer
        self._clock: Clock = clock or SystemClock()
        self._keys = RedisKeys(prefix)
        self._dead_cap = dead_letter_cap
        self._queues: dict[AgentType, rq.Queue] = {
            a: Queue(queue_name(a), connection=client, serializer=JSONSerializer) for a in AgentType
        }
        self._discard_script = client.register_script(_DISCARD)
        self._writer = JobWriter(
            client,
            JOB_FUNCTION,
            result_ttl=result_ttl,
            failure_ttl=failure_ttl,
            call_key=self._keys.publish_call,
        )
        self._slice = blocking_slice(client)
        # interrupt() bookkeeping: see the module docstring
        self._instance = secrets.token_hex(8)
        self._slots = itertools.count()
        self._calls = itertools.count()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._interrupts = Interrupts()  # guarded by _lock
        self._waiting: dict[int, str] = {}  # consume call -> its thread's wake list

    # -- for the worker command -------------------------------------------------------------

    @staticmethod
    def queue_name(agent_type: AgentType) -> str:
        return queue_name(agent_type)

    def rq_queue(self, agent_type: AgentType) -> rq.Queue:
        """The RQ queue of ``agent_type`` (JSON serializer), e.g. to hand to an RQ worker."""
        return self._queues[agent_type]

    # -- publishing -------------------------------------------------------------------------

    def publish(self, task: Task) -> bool:
        return self.publish_many([task]) == 1

    def publish_many(self, tasks: Sequence[Task]) -> int:
        """Queue new tasks with one script call whatever their number (infra/redis/rq_jobs.py).

        Per task, atomically: ``SET <guard> NX EX``, and ``EXISTS <job>`` -- of racing
        publishers only one sets the guard, and a job still in RQ (queued, running or keeping
        its result) also makes the task a duplicate, should its guard have expired -- then
        the winners' job hashes and queue pushes in RQ's format, as RQ's ``enqueue_many``
        writes them.

        A failed call leaves nothing to undo: the script refuses before its first write or
        runs to the end, so a guard is never left set without its job (the two round trips
        this replaced had to release the guards of a failed MULTI/EXEC). If the reply was
        lost, redis-py's retry of the same call gets the first reply back (the script keeps
        it under the call's token for a while) and writes nothing, even if a worker took a
        job or a cancel discarded it meanwhile; a later publish of the tasks finds
        duplicates.
        """
        unique: dict[str, Task] = {}
        for task in tasks:
            unique.setdefault(task.task_id, task)  # the first of a batch's duplicates wins
        if not unique:
            return 0
        now = self._clock.now()
        jobs = [self._new_job(task, now) for task in unique.values()]
        count = sum(self._writer.enqueue(jobs, datetime.now(UTC)))
        log.debug("tasks_published", count=count, duplicates=len(jobs) - count)
        return count

    def _new_job(self, task: Task, now: datetime) -> NewJob:
        return NewJob(
            job_id=job_id_for(task.task_id),
            queue=queue_name(task.agent_type),
            guard=self._keys.task_guard(task.task_id),
            args=(self._signer.seal(task),),
            description=f"{task.action.value} {task.host_id} ({task.mission_id})",
            meta={
                "task_id": task.task_id,
                "mission_id": task.mission_id,
                "host_id": task.host_id,
                "attempt": task.attempt,
            },
            # RQ's job_timeout, an upper bound only: RQ starts it when the job starts, so
            # `reaper worker` lowers it to the time left then. The guard lives as long plus
            # the result's TTL.
            timeout=_job_timeout(task, now),
        )

    # -- consuming --------------------------------------------------------------------------

    def consume(self, agent_type: AgentType, timeout: float) -> Task | None:
        queue_key: str = self._queues[agent_type].key
        registered = self._register() if timeout > 0 else None
        if registered is None:  # no wait asked for, or an interrupt this thread has not seen
            try:
                while (raw := self._client.lpop(queue_key)) is not None:
                    task = self._take(agent_type, raw)
                    if task is not None:
                        return task
                return None
            finally:
                with self._lock:
                    self._interrupts.observed()
        deadline = time.monotonic() + timeout
        token, wake_key, generation = registered
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or generation != self._interrupts.generation:
                    return None
                wait = remaining if self._slice is None else min(remaining, self._slice)
                popped = self._client.blpop([queue_key, wake_key], timeout=_blpop_timeout(wait))
                if popped is None:
                    continue
                key, raw = popped
                if as_text(key) == wake_key:
                    return None
                task = self._take(agent_type, raw)
                if task is not None:
                    return task
        finally:
            self._unregister(token, wake_key, generation)

    def _register(self) -> tuple[int, str, int] | None:
        """Enlist this call for interrupt()'s wake-up: (call token, wake list, generation);
        None, enlisting nothing, if an interrupt came since this thread's last consume."""
        wake_key: str | None = getattr(self._local, "wake_key", None)
        if wake_key is None:
            wake_key = self._keys.queue_wake(self._instance, next(self._slots))
            self._local.wake_key = wake_key
        with self._lock:
            if self._interrupts.pending():
                return None
            token = next(self._calls)
            self._waiting[token] = wake_key
            return token, wake_key, self._interrupts.generation

    def _unregister(self, token: int, wake_key: str, generation: int) -> None:
        from redis.exceptions import RedisError

        with self._lock:
            self._waiting.pop(token, None)
            woken = generation != self._interrupts.generation
            self._interrupts.observed()
        if woken:
            # An interrupt may have pushed after we stopped listening: a leftover would end
            # this thread's next consume at once.
            try:
                self._client.delete(wake_key)
            except RedisError as err:
                log.warning("wake_list_not_cleared", key=wake_key, error=str(err))

    def _take(self, agent_type: AgentType, raw_job_id: object) -> Task | None:
        """The task of a job just popped off the queue, or None once it is dead-lettered."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job
        from rq.serializers import JSONSerializer

        job_id = as_text(raw_job_id)
        if not is_rq_job_id(job_id):
            # RQ would read "a:b" as job "a": never let a foreign id point at another job.
            self._reject(agent_type, job_id, job_id, "not an RQ job id", delete=False)
            return None
        try:
            job = Job.fetch(job_id, connection=self._client, serializer=JSONSerializer)
        except NoSuchJobError as err:  # no hash, or one without job data
            self._reject(agent_type, job_id, job_id, str(err))
            return None
        except Exception as err:  # noqa: BLE001 - a foreign hash can break RQ's parser anywhere
            self._reject(agent_type, job_id, job_id, f"job is unreadable: {_describe(err)}")
            return None
        try:
            func_name, args, kwargs = job.func_name, job.args, job.kwargs
        except Exception as err:  # noqa: BLE001 - RQ wraps every serializer failure differently
            payload = _raw_text(job)
            self._reject(agent_type, job_id, payload, f"job data is not JSON: {_describe(err)}")
            return None
        if func_name != JOB_FUNCTION:
            self._reject(
                agent_type, job_id, _args_text(args), f"job calls {func_name!r}, not {JOB_FUNCTION}"
            )
            return None
        if (
            kwargs
            or not isinstance(args, list | tuple)
            or len(args) != 1
            or not isinstance(args[0], str)
        ):
            self._reject(
                agent_type, job_id, _args_text(args), "job arguments are not one envelope string"
            )
            return None
        envelope: str = args[0]
        try:
            task = self._signer.open(envelope, self._clock.now())
        except TaskRejectedError as err:
            if err.code != "TASK_EXPIRED" or err.task is None:
                self._reject(agent_type, job_id, envelope, f"{err.code}: {err}")
                return None
            task = err.task
            log.info(
                "expired_task_consumed", task_id=task.task_id, deadline=task.deadline.isoformat()
            )
        if task.schema_version > SCHEMA_VERSION:
            self._reject(
                agent_type,
                job_id,
                envelope,
                f"TASK_MALFORMED: Task has schema_version {task.schema_version}; "
                f"this build reads up to {SCHEMA_VERSION}",
            )
            return None
        if job_id != job_id_for(task.task_id):
            # A signed envelope copied into another job: it would dodge the dedupe by id.
            self._reject(
                agent_type,
                job_id,
                envelope,
                f"TASK_JOB_MISMATCH: job {job_id!r} carries task {task.task_id!r}",
            )
            return None
        pipe = self._client.pipeline(transaction=True)
        pipe.delete(Job.key_for(job_id), self._keys.task_guard(task.task_id))
        pipe.execute()
        return task

    def _reject(
        self, agent_type: AgentType, job_id: str, payload: str, error: str, *, delete: bool = True
    ) -> None:
        from rq.job import Job

        pipe = self._client.pipeline(transaction=True)
        self._record_dead(pipe, agent_type, payload, error, job_id=job_id)
        if delete:
            pipe.delete(Job.key_for(job_id))  # off the queue already; nothing will read it again
        pipe.execute()

    # -- dead letters -----------------------------------------------------------------------

    def dead_letter_task(self, agent_type: AgentType, payload: str, error: str) -> None:
        """Record a job that will not run (the RQ job function calls this for a refused
        envelope), exactly as ``consume`` records one."""
        pipe = self._client.pipeline(transaction=True)
        self._record_dead(pipe, agent_type, payload, error)
        pipe.execute()

    def dead_letter_job(self, agent_type: AgentType, job_id: str, error: str) -> None:
        """Record a job the worker will not run -- one that calls another function, or whose
        hash RQ cannot load, or an id with no job behind it -- and remove it.

        The payload is the job's raw hash (what a foreign writer put there). Removed: the hash
        and the id's entry in RQ's intermediate list, where RQ moved it when it dequeued it
        (left there, RQ's maintenance would fail the job again a minute later).
        """
        from rq.job import Job

        is_ours = is_rq_job_id(job_id)  # RQ would read "a:b" as job "a": never touch that one
        payload = job_id
        if is_ours:
            raw = self._client.hgetall(Job.key_for(job_id))
            if raw:
                payload = json.dumps({as_text(k): as_text(v) for k, v in raw.items()})
        pipe = self._client.pipeline(transaction=True)
        self._record_dead(pipe, agent_type, payload[:_RAW_JOB_CHARS], error, job_id=job_id)
        if is_ours:
            pipe.delete(Job.key_for(job_id))
        pipe.lrem(self._queues[agent_type].intermediate_queue_key, 1, job_id)
        pipe.execute()

    # -- running each task once -------------------------------------------------------------

    def claim_run(self, task: Task, token: str) -> bool:
        """Claim ``task`` for one run: True for the first caller (``token`` names the run).

        A job id is a task id and the engine gives every attempt a new task id, so a task id
        that comes back -- a MULTI/EXEC retried after its reply was lost, a finished job id
        pushed again, a resumed engine re-publishing -- is never meant to run again. The key
        lives until the deadline (plus RUN_CLAIM_MARGIN) and no longer: past it the task is
        refused as expired anyway. A run cut short by a crash is not re-run under this id
        either: its engine times the task out and schedules a new attempt under a new id.
        """
        ttl = _job_timeout(task, self._clock.now()) + RUN_CLAIM_MARGIN
        key = self._keys.task_ran(task.task_id)
        if self._client.set(key, token, nx=True, ex=ttl):
            return True
        # A SET the client retried after losing its reply finds its own claim: still ours.
        return as_text(self._client.get(key)) == token

    def _record_dead(
        self,
        pipe: redis.client.Pipeline,
        agent_type: AgentType,
        payload: str,
        error: str,
        *,
        job_id: str | None = None,
    ) -> None:
        key = self._keys.dead_tasks(agent_type)
        doc = {
            "source": queue_name(agent_type),
            "payload": payload,
            "error": error,
            "at": self._clock.now().isoformat(),
            "job_id": job_id,
        }
        pipe.lpush(key, json.dumps(doc))
        pipe.ltrim(key, 0, self._dead_cap - 1)
        log.warning("task_dead_lettered", queue=queue_name(agent_type), job_id=job_id, error=error)

    def dead_letters(self, agent_type: AgentType) -> list[DeadLetter]:
        """Oldest first, like the in-memory queue (the list is pushed at its head)."""
        raw = self._client.lrange(self._keys.dead_tasks(agent_type), 0, -1)
        return [_dead_letter(agent_type, item) for item in reversed(raw)]

    # -- the rest of the port ---------------------------------------------------------------

    def discard(self, task_ids: Sequence[str]) -> int:
        from rq.job import Job

        job_ids = {job_id_for(t): t for t in task_ids}
        queues = [self._queues[a] for a in AgentType]
        removed = 0
        items = list(job_ids.items())
        for start in range(0, len(items), _DISCARD_CHUNK):
            chunk = items[start : start + _DISCARD_CHUNK]
            keys: list[str] = [q.key for q in queues]
            for job_id, task_id in chunk:
                keys += [Job.key_for(job_id), self._keys.task_guard(task_id)]
            args: list[str | int] = [len(queues), *(q.name for q in queues), *(j for j, _ in chunk)]
            removed += int(self._discard_script(keys=keys, args=args))
        return removed

    def size(self, agent_type: AgentType) -> int:
        return int(self._client.llen(self._queues[agent_type].key))

    def interrupt(self) -> None:
        """Wake every ``consume`` of this instance in progress (each returns None), and make
        the next consume of every other thread return without blocking."""
        from redis.exceptions import RedisError

        with self._lock:
            self._interrupts.fire()
            wake_keys = sorted(set(self._waiting.values()))
            if not wake_keys:
                return
            # Pushed under the lock, so a consumer that unregisters after this (and clears
            # its list) cannot be left with a push that lands later.
            try:
                pipe = self._client.pipeline(transaction=False)
                for key in wake_keys:
                    pipe.rpush(key, b"1")
                    pipe.expire(key, _WAKE_TTL)
                pipe.execute()
            except RedisError as err:
                # A consumer blocked on a broken connection fails by itself.
                log.warning("queue_interrupt_failed", error=str(err))


def _job_timeout(task: Task, now: datetime) -> int:
    """Whole seconds until the task's deadline, at least 1 (RQ kills the job past it)."""
    return max(1, math.ceil((task.deadline - now).total_seconds()))


def _blpop_timeout(seconds: float) -> float:
    """BLPOP's timeout, rounded up to a millisecond: 0 would mean forever."""
    return max(1, math.ceil(seconds * 1000)) / 1000


def _describe(err: BaseException) -> str:
    cause = err.__cause__ or err.__context__
    text = f"{type(err).__name__}: {err}".rstrip(": ")
    if cause is not None:
        text += f" ({type(cause).__name__}: {cause})"
    return text


def _raw_text(job: Any) -> str:
    try:
        data = job.data
    except Exception:  # noqa: BLE001 - best effort: this is only for the record
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)


def _args_text(args: Any) -> str:
    """A dead letter's payload: the single string argument as it was, else the args as JSON."""
    if isinstance(args, list | tuple) and len(args) == 1 and isinstance(args[0], str):
        return args[0]
    try:
        return json.dumps(args)
    except (TypeError, ValueError):
        return repr(args)


def _dead_letter(agent_type: AgentType, raw: bytes | str) -> DeadLetter:
    from reaper_engine.clock import utcnow

    try:
        doc = json.loads(raw)
        at = datetime.fromisoformat(doc["at"])
        return DeadLetter(
            source=str(doc["source"]), payload=str(doc["payload"]), error=str(doc["error"]), at=at
        )
    except (ValueError, KeyError, TypeError):
        # Written by something else: keep it visible rather than hide it.
        text = as_text(raw)
        return DeadLetter(
            source=queue_name(agent_type), payload=text, error="unreadable dead letter", at=utcnow()
        )
