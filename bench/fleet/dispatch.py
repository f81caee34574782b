"""Section 2: tasks dispatched by RqTaskQueue, beside rq's enqueue_many and a raw RPUSH."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from infra.redis import JOB_FUNCTION, RqTaskQueue, job_id_for
from reaper_engine.clock import utcnow
from reaper_engine.models import Action, AgentType, HostSpec, Task
from reaper_engine.signing import TaskSigner

from .missions import bench_task, host_specs
from .report import rate, simple_table
from .rounds import Method, rounds

DISPATCH_GOAL = 2_000.0


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class DispatchBench:
    client: redis.Redis
    signer: TaskSigner
    tasks: int
    batch: int
    specs: list[HostSpec] = field(default_factory=list)
    envelope_bytes: int = 0

    def fresh_tasks(self) -> list[Task]:
        if not self.specs:
            self.specs = host_specs(self.tasks)
        return [bench_task(spec, Action.SCAN, "bench-dispatch") for spec in self.specs]

    def ours(self) -> dict[str, float]:
        self.client.flushdb()
        queue = RqTaskQueue(self.client, self.signer)
        tasks = self.fresh_tasks()
        start = time.perf_counter()
        published = sum(queue.publish_many(chunk) for chunk in chunks(tasks, self.batch))
        elapsed = time.perf_counter() - start
        if published != len(tasks):
            raise RuntimeError(f"published {published} of {len(tasks)}")
        return {"publish": elapsed}

    def plain_rq(self) -> dict[str, float]:
        """The same jobs as RqTaskQueue makes (envelopes sealed beforehand), rq's enqueue_many."""
        self.client.flushdb()
        queues = {
            a: Queue(a.value, connection=self.client, serializer=JSONSerializer) for a in AgentType
        }
        datas: dict[AgentType, list[Any]] = {}
        now = utcnow()
        jobs = []
        for task in self.fresh_tasks():
            envelope = self.signer.seal(task)
            self.envelope_bytes = len(envelope)
            timeout = max(1, int((task.deadline - now).total_seconds()))
            jobs.append((task, envelope, timeout))
        start = time.perf_counter()
        for chunk in chunks(jobs, self.batch):
            datas.clear()
            for task, envelope, timeout in chunk:
                datas.setdefault(task.agent_type, []).append(
                    Queue.prepare_data(
                        JOB_FUNCTION,
                        args=[envelope],
                        timeout=timeout,
                        result_ttl=3600,
                        failure_ttl=24 * 3600,
                        description=f"{task.action.value} {task.host_id} ({task.mission_id})",
                        job_id=job_id_for(task.task_id),
                        meta={
                            "task_id": task.task_id,
                            "mission_id": task.mission_id,
                            "host_id": task.host_id,
                            "attempt": task.attempt,
                        },
                    )
                )
            pipe = self.client.pipeline(transaction=True)
            for agent_type, batch in datas.items():
                queues[agent_type].enqueue_many(batch, pipeline=pipe)
            pipe.execute()
        elapsed = time.perf_counter() - start
        count = sum(q.count for q in queues.values())
        if count != len(jobs):
            raise RuntimeError(f"rq queued {count} of {len(jobs)}")
        return {"publish": elapsed}

    def raw_rpush(self) -> dict[str, float]:
        self.client.flushdb()
        size = self.envelope_bytes or len(self.signer.seal(self.fresh_tasks()[0]))
        payloads = [(b"%08d" % i) + b"x" * (size - 8) for i in range(self.tasks)]
        start = time.perf_counter()
        for chunk in chunks(payloads, self.batch):
            pipe = self.client.pipeline(transaction=False)
            for payload in chunk:
                pipe.rpush("bench:raw:tasks", payload)
            pipe.execute()
        elapsed = time.perf_counter() - start
        if self.client.llen("bench:raw:tasks") != self.tasks:
            raise RuntimeError("raw RPUSH lost payloads")
        return {"publish": elapsed}


def run_dispatch(
    args: argparse.Namespace, client: redis.Redis, signer: TaskSigner
) -> tuple[list[str], list[str]]:
    dispatch = DispatchBench(client, signer, args.tasks, args.batch)
    ours, raw = "RqTaskQueue.publish_many (signed, deduplicated)", "raw redis-py pipelined RPUSH"
    methods: dict[str, Method] = {
        ours: dispatch.ours,
        "rq Queue.enqueue_many (same jobs, sealed beforehand)": dispatch.plain_rq,
        raw: dispatch.raw_rpush,
    }
    results = rounds(methods, args.reps, warm=True)
    out = simple_table(
        f"**Tasks dispatched** ({args.tasks} scan tasks over the 3 queues, {args.batch} per "
        f"call; envelopes of {dispatch.envelope_bytes} bytes, the raw payloads as long)",
        "tasks",
        args.tasks,
        results,
        raw,
    )
    per_s = rate(args.tasks, results[ours]["total"])
    verdict = "met" if per_s >= DISPATCH_GOAL else "NOT met"
    return out, [f"tasks dispatched: {per_s:,.0f}/s (goal {DISPATCH_GOAL:,.0f}/s: {verdict})"]
