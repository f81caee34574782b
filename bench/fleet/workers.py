"""Section 3: tasks executed by one worker, RQ's and reaper's, beside a raw redis-py floor."""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis
from rq import Queue, SimpleWorker, Worker, get_current_job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from agents.os_agents import LinuxAgent
from agents.rq_job import JobContext, install
from agents.simulation import SimulatedLab
from agents.transports.router import TransportRouter
from infra.redis import RedisStreamEventBus, RqTaskQueue, connect, job_id_for
from overseer.fleet.worker import WORKER_TTL, guarded_worker_class
from reaper_engine.models import OS, Action, AgentType, HostSpec, TransportKind
from reaper_engine.signing import TaskSigner

from .missions import bench_task
from .report import simple_table
from .rounds import Method, rounds


def noop() -> None:
    """The trivial job. RQ imports it by its dotted path, ``fleet.workers.noop`` (``bench/`` is
    on sys.path when the script runs), in a worker of this process or in its fork."""


NOOP = f"{__name__}.noop"


@dataclass
class WorkerBench:
    client: redis.Redis
    url: str
    signer: TaskSigner
    jobs: int
    lab: SimulatedLab = field(default_factory=SimulatedLab)
    teardowns: list[float] = field(default_factory=list)

    def _trivial_queue(self) -> Queue:
        self.client.flushdb()
        queue = Queue("bench-trivial", connection=self.client, serializer=JSONSerializer)
        pipe = self.client.pipeline(transaction=True)
        queue.enqueue_many([Queue.prepare_data(NOOP) for _ in range(self.jobs)], pipeline=pipe)
        pipe.execute()
        return queue

    def _burst(self, worker: BaseWorker) -> dict[str, float]:
        """Seconds of the job loop (start-up included) and of RQ's teardown, apart: the
        teardown joins the pub/sub thread with a 1 s timeout, 0 to 1 s whatever the jobs."""
        marks: dict[str, float] = {}
        teardown: Callable[[], None] = worker.teardown

        def timed_teardown() -> None:
            marks["loop_end"] = time.perf_counter()
            teardown()

        worker.teardown = timed_teardown  # type: ignore[method-assign]
        # RQ's SIGTERM/SIGINT handlers would turn ours into a warm stop of this one burst.
        worker._install_signal_handlers = lambda: None  # type: ignore[method-assign]
        start = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING", with_scheduler=False)
        end = time.perf_counter()
        loop_end = marks.get("loop_end", end)
        self.teardowns.append(end - loop_end)
        return {"work": loop_end - start}

    def _check(self, queue: Queue) -> None:
        finished = FinishedJobRegistry(queue=queue).count
        if queue.count or finished != self.jobs:
            raise RuntimeError(f"{finished} of {self.jobs} jobs finished, {queue.count} left")

    def rq_worker(self, cls: type[BaseWorker]) -> Method:
        def method() -> dict[str, float]:
            queue = self._trivial_queue()
            worker = cls([queue], connection=self.client, serializer=JSONSerializer)
            timed = self._burst(worker)
            self._check(queue)
            return timed

        return method

    def raw_worker(self) -> dict[str, float]:
        """What any worker must do per job, in three round trips, nothing else."""
        queue = self._trivial_queue()
        start = time.perf_counter()
        done = 0
        while (job_id := cast(bytes | None, self.client.lpop(queue.key))) is not None:
            key = b"rq:job:" + job_id
            self.client.hgetall(key)
            self.client.hset(key, "status", "finished")
            done += 1
        elapsed = time.perf_counter() - start
        if done != self.jobs:
            raise RuntimeError(f"raw worker took {done} of {self.jobs}")
        return {"work": elapsed}

    def guarded_scans(self) -> dict[str, float]:
        """``reaper worker``'s path, wired as ``run_worker`` wires it (RQ on a client of its
        own, run claims, the job time limit ended before the publish; not its RqBeat thread,
        which beats every few seconds): GuardedWorker -> run_task -> LinuxAgent -> XADD."""
        self.client.flushdb()
        queue = RqTaskQueue(self.client, self.signer)
        bus = RedisStreamEventBus(self.client)
        agent = LinuxAgent(queue, bus, TransportRouter({TransportKind.SIMULATED: self.lab}))
        spec = HostSpec(
            host_id="lnx-dev-01",
            os=OS.LINUX,
            user="noah",
            options={"process_table": "linux-incident"},
        )
        mission_id = f"bench-{uuid.uuid4().hex[:10]}"
        tasks = [bench_task(spec, Action.SCAN, mission_id) for _ in range(self.jobs)]
        queue.publish_many(tasks)
        dead: list[str] = []

        def current_job_id() -> str | None:
            job = get_current_job()
            return None if job is None else job.id

        rq_client = connect(self.url)
        worker = guarded_worker_class(lambda job_id, error: dead.append(error))(
            [queue.queue_name(AgentType.LINUX)],
            connection=rq_client,
            serializer=JSONSerializer,
            worker_ttl=WORKER_TTL,
        )
        worker.clock = agent.clock
        name = worker.name
        context = JobContext(
            agent=agent,
            signer=self.signer,
            dead_letter=lambda payload, error: dead.append(error),
            current_job_id=current_job_id,
            job_id_for=job_id_for,
            claim=lambda task, token: queue.claim_run(task, f"{name}:{token}"),
            disarm=worker.disarm_job_timeout,
        )
        install(context)
        try:
            timed = self._burst(worker)
        finally:
            install(None)
            rq_client.close()
        results = self.client.xlen(bus.stream_key(mission_id))
        if agent.handled != self.jobs or results != self.jobs or context.rejected or dead:
            raise RuntimeError(
                f"{agent.handled} of {self.jobs} scans handled, {results} results, "
                f"rejected {dict(context.rejected)}, dead letters {dead[:3]}"
            )
        return timed


def run_workers(
    args: argparse.Namespace, client: redis.Redis, url: str, signer: TaskSigner
) -> list[str]:
    workers = WorkerBench(client, url, signer, args.jobs)
    simple = "rq SimpleWorker, no-op jobs"
    methods: dict[str, Method] = {
        simple: workers.rq_worker(SimpleWorker),
        "rq Worker (a fork per job), no-op jobs": workers.rq_worker(Worker),
        "raw redis-py LPOP + HGETALL + HSET per job": workers.raw_worker,
        "GuardedWorker (reaper worker), signed scan tasks": workers.guarded_scans,
    }
    results = rounds(methods, args.reps, warm=True)
    teardown = statistics.median(workers.teardowns) if workers.teardowns else 0.0
    return [
        *simple_table(
            f"**Tasks executed by one worker** (burst mode, {args.jobs} jobs a run; from "
            "work() to the end of its job loop, start-up included)",
            "jobs",
            args.jobs,
            results,
            simple,
        ),
        f"RQ's teardown after a burst (not in the figures above): median {teardown * 1000:.0f} "
        f"ms, {min(workers.teardowns, default=0) * 1000:.0f} to "
        f"{max(workers.teardowns, default=0) * 1000:.0f} ms (it joins its pub/sub thread with "
        "a 1 s timeout)",
        "",
    ]
