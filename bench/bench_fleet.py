"""Fleet throughput on Redis: results one engine applies, tasks dispatched, tasks a worker runs.

Usage: .venv/bin/python bench/bench_fleet.py [--hosts 50,1000] [--reps 5] [--big-reps 3]
       [--tasks 2000] [--batch 100] [--jobs 200] [--no-aof] [--only events,dispatch,workers]
       [--quick]

Starts its own ``redis-server`` (a free loopback port, a temporary directory, AOF with fsync
every second as docker/compose.yaml runs it; ``--no-aof`` for none) and stops it in
``finally``, also on Ctrl-C and SIGTERM. Every figure is a median over ``--reps`` rounds
(``--big-reps`` for missions over 200 hosts, whose runs take seconds) in which the methods
take turns, so the machine's noise lands on all of them alike; the ratios to the raw
redis-py baselines of the same run are the figures to compare between runs. ~1-2 min with
the defaults on 2 cores.

1. **Result events applied by one engine**, for a mission of each ``--hosts`` size. An audit
   mission over simulated hosts (the lab's four process tables in turn) is started with
   ``MissionEngine.start_mission`` (its discover tasks dispatched), then, untimed, one
   success result per pending task is appended to the mission's stream, with the data the
   real agent reports for that table; timed: the engine draining them as its loop does,
   ``bus.read`` (batches of 500) -> ``handle_deliveries`` (one load-apply-save per batch,
   then XACK). Two phases: the discover results (each plans and dispatches a scan task),
   then the scan results (each settles its host; the last completes the mission): 2 x hosts
   events. Methods: in-memory ports; Redis ports (RedisStreamEventBus, RedisMissionStore,
   RqTaskQueue, as ``reaper engine`` wires them); the same plus ``tick()`` before each read,
   as ``run_event_loop`` does (``MissionEngine.step``: the batch then reuses the state the
   tick loaded); the same with ``reaper engine``'s default logging (INFO, JSON
   lines, here to /dev/null); and the baseline, raw redis-py: XADD of the same payloads,
   then XREADGROUP COUNT 500 + XACK until drained. Then one more Redis run with each port
   call timed, to show where an engine's time goes. This section runs with the garbage
   collector tuned as ``reaper engine`` tunes it once started (``infra.gc_tuning.tune_gc``),
   and restores Python's settings after it: the workers of section 3 keep the defaults.
2. **Tasks dispatched**: ``RqTaskQueue.publish_many`` (signed envelopes, dedupe guards) of
   ``--tasks`` scan tasks in calls of ``--batch``, beside plain rq ``Queue.enqueue_many`` of
   the same jobs (same envelopes, prepared beforehand) and a raw pipelined RPUSH of
   payloads of the same size, in the same batches.
3. **Tasks executed per worker**, burst mode, ``--jobs`` jobs: RQ's SimpleWorker and its
   forking Worker on a no-op function, the raw redis-py floor of a worker (LPOP + HGETALL +
   HSET per job), and ``reaper worker``'s own class (GuardedWorker, a SimpleWorker) running
   real signed scan tasks for a simulated host through ``agents.rq_job.run_task``, each
   result published to the stream.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from types import FrameType
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
import structlog
from rq import Queue, SimpleWorker, Worker, get_current_job
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from agents.os_agents import AGENTS, LinuxAgent
from agents.rq_job import JobContext, install
from agents.simulation import SimulatedLab
from agents.transports.router import TransportRouter
from infra.gc_tuning import tune_gc
from infra.logging import configure_logging
from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue
from infra.redis import (
    JOB_FUNCTION,
    RedisMissionStore,
    RedisStreamEventBus,
    RqTaskQueue,
    connect,
    job_id_for,
)
from infra.redis.bus import DEFAULT_MAXLEN, EVENT_FIELD, GROUP
from overseer.fleet.worker import WORKER_TTL, guarded_worker_class
from reaper_engine.clock import utcnow
from reaper_engine.engine import MissionEngine
from reaper_engine.models import (
    OS,
    Action,
    AgentType,
    HostSpec,
    HostState,
    MissionKind,
    MissionOptions,
    MissionState,
    MissionStatus,
    ResultEvent,
    Task,
    TransportKind,
)
from reaper_engine.ports import EventBus, MissionStore, TaskQueue
from reaper_engine.rule_planner import RuleBasedPlanner
from reaper_engine.signing import TaskSigner

REDIS_SERVER = shutil.which("redis-server")
SECRET = b"bench-fleet-secret-0123456789abcdef"
# The lab's process tables (agents/simulation/tables), one host in four of each.
TABLES = [
    (OS.LINUX, "linux-incident", "noah"),
    (OS.LINUX, "linux-ci", "ci"),
    (OS.MACOS, "macos-dev", "dana"),
    (OS.WINDOWS, "windows-dev", "LAB\\builder"),
]
# What the engine loop reads per call (MissionEngine.batch_size's default); the raw baseline
# reads as many.
READ_BATCH = 500
READ_TIMEOUT = 1.0  # > 0, as in the loop: the Redis bus then asks XINFO GROUPS beside it
EVENT_GOAL = 10_000.0
DISPATCH_GOAL = 2_000.0
TASK_TIMEOUT = 3600.0  # nothing times out during a run
BIG_MISSION = 200  # hosts; a bigger mission's run takes seconds, so it gets --big-reps rounds


def noop() -> None:
    """The trivial job (RQ imports it as ``__main__.noop`` in a worker of this process)."""


NOOP = f"{__name__}.noop"


# -- redis-server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisChild:
    """A redis-server of our own, as tests/redis_server.py starts one (plus AOF everysec)."""

    def __init__(self, directory: Path, *, aof: bool) -> None:
        self.directory = directory
        self.port = free_port()
        assert REDIS_SERVER is not None  # main() checks
        self.argv = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(directory / "redis.log"),
        ]
        if aof:
            self.argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not self._pong():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {self.directory}/redis.log)")
            time.sleep(0.02)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def server_version(self) -> str:
        out = subprocess.run(
            [self.argv[0], "--version"], capture_output=True, text=True, check=False
        )
        return out.stdout.split(" v=")[1].split()[0] if " v=" in out.stdout else "?"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: redis-server is stopped


def _install_exit_handlers() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGHUP, _exit_on_sigterm)


# -- rounds ------------------------------------------------------------------------------------

# A method does its own untimed set-up and returns the seconds of each timed part.
Method = Callable[[], dict[str, float]]


def rounds(methods: dict[str, Method], reps: int, *, warm: bool) -> dict[str, dict[str, float]]:
    """Median seconds of each timed part (and of their sum, "total"), the methods taking
    turns within each round."""
    if warm:
        for method in methods.values():
            method()  # imports, Lua scripts, first fork, page cache
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    for _ in range(reps):
        for name, method in methods.items():
            parts = method()
            samples[name].append({**parts, "total": sum(parts.values())})
    return {
        name: {part: statistics.median(s[part] for s in runs) for part in runs[0]}
        for name, runs in samples.items()
    }


# -- 1. result events --------------------------------------------------------------------------


def host_specs(count: int) -> list[HostSpec]:
    specs = []
    for i in range(count):
        os_, table, user = TABLES[i % len(TABLES)]
        specs.append(
            HostSpec(
                host_id=f"host-{i:05d}.bench",
                os=os_,
                user=user,
                tags=("bench",),
                options={"process_table": table},
            )
        )
    return specs


def result_templates() -> dict[tuple[str, Action], ResultEvent]:
    """The results the real agent reports for a discover and a scan of each table."""
    lab = SimulatedLab()
    router = TransportRouter({TransportKind.SIMULATED: lab})
    out: dict[tuple[str, Action], ResultEvent] = {}
    for spec in host_specs(len(TABLES)):
        agent = AGENTS[spec.agent_type](InMemoryTaskQueue(), InMemoryEventBus(), router)
        for action in (Action.DISCOVER, Action.SCAN):
            task = bench_task(spec, action, "template")
            out[(str(spec.options["process_table"]), action)] = agent.handle(task)
    return out


def bench_task(spec: HostSpec, action: Action, mission_id: str) -> Task:
    now = utcnow()
    return Task(
        task_id=f"{action.value}-{spec.host_id}-{uuid.uuid4().hex[:12]}",
        mission_id=mission_id,
        host_id=spec.host_id,
        agent_type=spec.agent_type,
        action=action,
        created_at=now,
        deadline=now + timedelta(seconds=TASK_TIMEOUT),
        target=spec,
    )


def new_mission(mission_id: str, specs: Sequence[HostSpec]) -> MissionState:
    return MissionState(
        mission_id=mission_id,
        kind=MissionKind.AUDIT,
        hosts={spec.host_id: HostState.from_spec(spec) for spec in specs},
        options=MissionOptions(task_timeout_seconds=TASK_TIMEOUT),
    )


def results_for(
    tasks: Sequence[Task], templates: dict[tuple[str, Action], ResultEvent]
) -> list[ResultEvent]:
    """A success result for each task, carrying what the agent reports for its host's table."""
    out = []
    for task in tasks:
        template = templates[(str(task.target.options["process_table"]), task.action)]
        out.append(
            template.model_copy(
                update={
                    "task_id": task.task_id,
                    "mission_id": task.mission_id,
                    "host_id": task.host_id,
                    "agent_type": task.agent_type,
                    "ts": utcnow(),
                }
            )
        )
    return out


def xadd_all(client: redis.Redis, key: str, payloads: Sequence[str]) -> None:
    """Append as RedisStreamEventBus.publish does (same field, same trimming), pipelined."""
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(key, {EVENT_FIELD: payload}, maxlen=DEFAULT_MAXLEN, approximate=True)
    pipe.execute()


@dataclass
class Ports:
    store: MissionStore
    queue: TaskQueue
    bus: EventBus
    publish: Callable[[str, list[ResultEvent]], None]


@dataclass
class EngineRun:
    """One mission's result stream through one engine: set-up untimed, the drains timed."""

    ports: Callable[[], Ports]
    specs: Sequence[HostSpec]
    templates: dict[tuple[str, Action], ResultEvent]
    tick: bool = False
    before: Callable[[], None] | None = None  # e.g. switch the logging configuration
    after: Callable[[], None] | None = None
    timing: Callable[[bool], None] | None = None  # told when each drain starts and ends
    state_bytes: int = 0

    def __call__(self) -> dict[str, float]:
        if self.before is not None:
            self.before()
        try:
            return self._run()
        finally:
            if self.after is not None:
                self.after()

    def _run(self) -> dict[str, float]:
        ports = self.ports()
        mission_id = f"bench-{uuid.uuid4().hex[:10]}"
        engine = MissionEngine(
            mission_id,
            store=ports.store,
            queue=ports.queue,
            bus=ports.bus,
            planner=RuleBasedPlanner(),
        )
        state = engine.start_mission(new_mission(mission_id, self.specs))
        parts: dict[str, float] = {}
        for phase in (Action.DISCOVER, Action.SCAN):
            tasks = [p.task for p in state.pending_tasks.values()]
            if not tasks or any(t.action is not phase for t in tasks):
                raise RuntimeError(f"expected {phase.value} tasks pending")
            ports.publish(mission_id, results_for(tasks, self.templates))
            if self.timing is not None:
                self.timing(True)
            try:
                parts[phase.value] = drain(
                    engine, ports.bus, mission_id, len(tasks), tick=self.tick
                )
            finally:
                if self.timing is not None:
                    self.timing(False)
            loaded = ports.store.load(mission_id)
            if loaded is None:
                raise RuntimeError(f"mission {mission_id} vanished")
            state = loaded
        applied = state.counters.results_applied
        if state.status is not MissionStatus.COMPLETED or applied != 2 * len(self.specs):
            raise RuntimeError(f"mission ended {state.status} with {applied} results applied")
        if ports.bus.pending_count(mission_id):
            raise RuntimeError("events left unacknowledged")
        self.state_bytes = len(state.model_dump_json())
        return parts


def drain(
    engine: MissionEngine, bus: EventBus, mission_id: str, expected: int, *, tick: bool
) -> float:
    applied = 0
    start = time.perf_counter()
    while applied < expected:
        if tick:
            engine.tick()
        batch = bus.read(mission_id, timeout=READ_TIMEOUT, max_count=READ_BATCH)
        if not batch:
            raise RuntimeError(f"stream ran dry after {applied} of {expected} events")
        engine.handle_deliveries(batch)
        applied += len(batch)
    return time.perf_counter() - start


def raw_stream(client: redis.Redis, phases: Sequence[Sequence[str]]) -> dict[str, float]:
    """The baseline: the same payloads drained with XREADGROUP COUNT 500 + XACK."""
    key = f"bench:raw:{uuid.uuid4().hex[:10]}"
    parts: dict[str, float] = {}
    for number, payloads in enumerate(phases):
        xadd_all(client, key, payloads)
        if number == 0:
            client.xgroup_create(key, GROUP, id="0", mkstream=True)
        drained = 0
        start = time.perf_counter()
        while True:
            reply: Any = client.xreadgroup(GROUP, "raw", {key: ">"}, count=READ_BATCH)
            if not reply:
                break
            ids = [entry_id for _, entries in reply for entry_id, _ in entries]
            client.xack(key, GROUP, *ids)
            drained += len(ids)
        parts[str(number)] = time.perf_counter() - start
        if drained != len(payloads):
            raise RuntimeError(f"raw drain took {drained} of {len(payloads)}")
    client.delete(key)
    return parts


class Timed:
    """A port whose named methods add their wall time to ``totals`` while ``on`` is set."""

    def __init__(self, target: object, names: Sequence[str], totals: dict[str, float]) -> None:
        self._target = target
        self._names = set(names)
        self._totals = totals
        self.on = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name not in self._names:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                if self.on:
                    key = f"{type(self._target).__name__}.{name}"
                    self._totals[key] = self._totals.get(key, 0.0) + time.perf_counter() - start

        return timed


@dataclass
class EventsBench:
    client: redis.Redis
    signer: TaskSigner
    templates: dict[tuple[str, Action], ResultEvent]
    info_log: Callable[[], None]
    quiet_log: Callable[[], None]
    breakdowns: dict[int, tuple[dict[str, float], int, int]] = field(default_factory=dict)

    def memory_ports(self) -> Ports:
        bus = InMemoryEventBus()

        def publish(_mission_id: str, events: list[ResultEvent]) -> None:
            for event in events:
                bus.publish(event)

        return Ports(InMemoryMissionStore(), InMemoryTaskQueue(), bus, publish)

    def redis_ports(self) -> Ports:
        self.client.flushdb()
        bus = RedisStreamEventBus(self.client)

        def publish(mission_id: str, events: list[ResultEvent]) -> None:
            xadd_all(self.client, bus.stream_key(mission_id), [e.model_dump_json() for e in events])

        return Ports(
            RedisMissionStore(self.client), RqTaskQueue(self.client, self.signer), bus, publish
        )

    def run(self, hosts: int, *, reps: int, warm: bool) -> dict[str, dict[str, float]]:
        specs = host_specs(hosts)
        # The baseline's payloads: the same results, for tasks of the same shape.
        raw_phases = [
            [
                e.model_dump_json()
                for e in results_for([bench_task(s, a, "bench-raw") for s in specs], self.templates)
            ]
            for a in (Action.DISCOVER, Action.SCAN)
        ]
        redis_run = EngineRun(self.redis_ports, specs, self.templates)
        methods: dict[str, Method] = {
            "engine, in-memory ports": EngineRun(self.memory_ports, specs, self.templates),
            "engine, Redis": redis_run,
            "engine, Redis, tick() per batch (as its loop)": EngineRun(
                self.redis_ports, specs, self.templates, tick=True
            ),
            "engine, Redis, INFO log as JSON (reaper engine's default)": EngineRun(
                self.redis_ports,
                specs,
                self.templates,
                before=self.info_log,
                after=self.quiet_log,
            ),
            "raw redis-py XREADGROUP COUNT 500 + XACK": lambda: raw_stream(self.client, raw_phases),
        }
        results = rounds(methods, reps, warm=warm)
        self.breakdowns[hosts] = (self.breakdown(specs), redis_run.state_bytes, 2 * hosts)
        return results

    def breakdown(self, specs: Sequence[HostSpec]) -> dict[str, float]:
        """One more Redis run with every port call timed: seconds per part, summed."""
        totals: dict[str, float] = {}
        proxies: list[Timed] = []

        def ports() -> Ports:
            plain = self.redis_ports()
            store = Timed(plain.store, ["load", "save"], totals)
            queue = Timed(plain.queue, ["publish_many"], totals)
            bus = Timed(plain.bus, ["read", "ack"], totals)
            proxies[:] = [store, queue, bus]
            return Ports(
                cast(MissionStore, store),
                cast(TaskQueue, queue),
                cast(EventBus, bus),
                plain.publish,
            )

        def timing(on: bool) -> None:
            for proxy in proxies:
                proxy.on = on

        parts = EngineRun(ports, specs, self.templates, timing=timing)()
        totals["drain"] = sum(parts.values())
        return totals


# -- 2. dispatch -------------------------------------------------------------------------------


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


# -- 3. workers --------------------------------------------------------------------------------


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


# -- report ------------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def events_table(
    hosts: int, results: dict[str, dict[str, float]], state_bytes: int, reps: int
) -> list[str]:
    events = 2 * hosts
    raw_name = next(n for n in results if n.startswith("raw"))
    raw = rate(events, results[raw_name]["total"])
    lines = [
        f"**Result events applied, mission of {hosts} hosts** ({events} events: {hosts} discover "
        f"results, each dispatching a scan, then {hosts} scan results; state at the end "
        f"{state_bytes / 1024:.0f} KiB of JSON; medians of {reps} rounds; garbage collector "
        "tuned as reaper engine's, infra.gc_tuning.tune_gc)",
        "",
        "| method | median ms | events/s | discover phase ev/s | scan phase ev/s | ÷ raw |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, parts in results.items():
        phases = [parts[k] for k in parts if k != "total"]
        total = rate(events, parts["total"])
        lines.append(
            f"| {name} | {parts['total'] * 1000:.1f} | {total:,.0f} "
            f"| {rate(hosts, phases[0]):,.0f} | {rate(hosts, phases[1]):,.0f} | {total / raw:.3f} |"
        )
    return [*lines, ""]


def breakdown_table(hosts: int, totals: dict[str, float], events: int) -> list[str]:
    drain_s = totals.pop("drain")
    names = {
        "RedisMissionStore.load": "store.load: HGETALL its parts (MULTI) + decode the MissionState",
        "RedisMissionStore.save": "store.save: encode changed hosts and tasks + summary, Lua CAS",
        "RqTaskQueue.publish_many": "queue.publish_many: sign + enqueue the scans (Lua)",
        "RedisStreamEventBus.read": "bus.read: XREADGROUP (+ XINFO GROUPS) + decode events",
        "RedisStreamEventBus.ack": "bus.ack: XACK",
    }
    lines = [
        f"**Where one Redis engine's time goes, {hosts} hosts** (one run, each port call timed)",
        "",
        "| part | ms | µs / event | share |",
        "|---|---:|---:|---:|",
    ]
    rest = drain_s
    for key, label in names.items():
        seconds = totals.get(key, 0.0)
        rest -= seconds
        lines.append(
            f"| {label} | {seconds * 1000:.1f} | {seconds * 1e6 / events:.0f} "
            f"| {seconds / drain_s:.0%} |"
        )
    lines.append(
        f"| engine logic: apply, plan, settle (the rest) | {rest * 1000:.1f} "
        f"| {rest * 1e6 / events:.0f} | {rest / drain_s:.0%} |"
    )
    lines.append(f"| **total** | {drain_s * 1000:.1f} | {drain_s * 1e6 / events:.0f} | 100% |")
    return [*lines, ""]


def simple_table(
    title: str, unit: str, count: int, results: dict[str, dict[str, float]], base: str
) -> list[str]:
    lines = [
        title,
        "",
        f"| method | median ms | {unit}/s | ÷ {base} |",
        "|---|---:|---:|---:|",
    ]
    base_rate = rate(count, results[base]["total"])
    for name, parts in results.items():
        per_s = rate(count, parts["total"])
        lines.append(
            f"| {name} | {parts['total'] * 1000:.1f} | {per_s:,.0f} | {per_s / base_rate:.3f} |"
        )
    return [*lines, ""]


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}), Linux {os.uname().release}, load {load}"


class LogSwitch:
    """structlog at WARNING (nothing rendered: the engine's own cost), or as ``reaper engine``
    runs by default (INFO, JSON lines; here to /dev/null)."""

    def __init__(self) -> None:
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - closed by close()
        self.info()
        logging.getLogger().setLevel(logging.WARNING)  # basicConfig's root logger: rq's chatter
        self.quiet()

    def info(self) -> None:
        configure_logging("json", "info", stream=self._devnull)

    def quiet(self) -> None:
        structlog.configure(
            processors=structlog.get_config()["processors"],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )

    def close(self) -> None:
        self._devnull.close()


def run_events(
    args: argparse.Namespace, client: redis.Redis, signer: TaskSigner, logs: LogSwitch
) -> tuple[list[str], list[str]]:
    out: list[str] = []
    goals: list[str] = []
    bench = EventsBench(client, signer, result_templates(), logs.info, logs.quiet)
    thresholds = gc.get_threshold()
    tune_gc()  # the engine as it runs in production: tuned once its start-up is over
    try:
        for number, hosts in enumerate(int(x) for x in args.hosts.split(",") if x):
            reps = args.reps if hosts <= BIG_MISSION else args.big_reps
            results = bench.run(hosts, reps=reps, warm=number == 0)
            totals, state_bytes, events = bench.breakdowns[hosts]
            out += events_table(hosts, results, state_bytes, reps)
            out += breakdown_table(hosts, totals, events)
            on_redis = rate(events, results["engine, Redis"]["total"])
            goals.append(
                f"result events applied by one engine on Redis, {hosts} hosts: "
                f"{on_redis:,.0f}/s (goal {EVENT_GOAL:,.0f}/s: "
                f"{'met' if on_redis >= EVENT_GOAL else 'NOT met'})"
            )
    finally:
        # The workers of section 3 run as ``reaper worker`` does, with Python's settings.
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    return out, goals


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="50,1000", help="mission sizes, comma-separated")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds per measurement")
    parser.add_argument(
        "--big-reps",
        type=int,
        default=3,
        help=f"timed rounds for missions over {BIG_MISSION} hosts (a run takes seconds)",
    )
    parser.add_argument("--tasks", type=int, default=2000, help="tasks dispatched per round")
    parser.add_argument("--batch", type=int, default=100, help="tasks per publish call")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per worker run")
    parser.add_argument("--no-aof", action="store_true", help="redis-server without AOF")
    parser.add_argument(
        "--only", default="events,dispatch,workers", help="sections to run, comma-separated"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --hosts 20,200 --reps 3 --tasks 500 --jobs 60",
    )
    args = parser.parse_args()
    if REDIS_SERVER is None:
        print("no redis-server on PATH: install Redis (e.g. apt-get install redis-server)")
        return 2
    if args.quick:
        args.hosts, args.reps, args.big_reps, args.tasks, args.jobs = "20,200", 3, 3, 500, 60
    sections = set(args.only.split(","))
    _install_exit_handlers()
    logs = LogSwitch()
    started = time.perf_counter()
    signer = TaskSigner(SECRET)
    server = RedisChild(Path(tempfile.mkdtemp(prefix="reaper-bench-fleet-")), aof=not args.no_aof)
    client: redis.Redis | None = None
    goals: list[str] = []
    try:
        server.start()
        client = connect(server.url)
        persistence = "no persistence" if args.no_aof else "AOF, fsync every second"
        print(
            f"machine: {machine()}\n"
            f"redis-server {server.server_version()} ({persistence}), "
            f"redis-py {redis.__version__}, rq {version('rq')}, "
            f"Python {sys.version.split()[0]}; reps {args.reps} (missions over {BIG_MISSION} "
            f"hosts: {args.big_reps})\n",
            flush=True,
        )
        if "events" in sections:
            out, found = run_events(args, client, signer, logs)
            goals += found
            print("\n".join(out), flush=True)
        if "dispatch" in sections:
            out, found = run_dispatch(args, client, signer)
            goals += found
            print("\n".join(out), flush=True)
        if "workers" in sections:
            print("\n".join(run_workers(args, client, server.url, signer)), flush=True)
    finally:
        if client is not None:
            client.close()
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
        logs.close()
    if goals:
        print("\n".join(["Goals:", *(f"* {g}" for g in goals), ""]))
    print(f"total bench time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
