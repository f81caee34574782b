"""Section 1: result events applied by one engine, beside a raw XREADGROUP + XACK drain."""

from __future__ import annotations

import argparse
import gc
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from infra.gc_tuning import tune_gc
from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue
from infra.redis import RedisMissionStore, RedisStreamEventBus, RqTaskQueue
from infra.redis.bus import DEFAULT_MAXLEN, EVENT_FIELD, GROUP
from reaper_engine.engine import MissionEngine
from reaper_engine.models import Action, HostSpec, MissionStatus, ResultEvent
from reaper_engine.ports import EventBus, MissionStore, TaskQueue
from reaper_engine.rule_planner import RuleBasedPlanner
from reaper_engine.signing import TaskSigner

from .floor import FLOOR, RedisCpu, SerialisationFloor
from .logs import LogSwitch
from .missions import bench_task, host_specs, new_mission, result_templates, results_for
from .report import breakdown_table, events_table, rate
from .rounds import Method, rounds

# What the engine loop reads per call (MissionEngine.batch_size's default); the raw baseline
# reads as many.
READ_BATCH = 500
# Results as they come from a fleet between bursts: a few per read, each batch paying the
# per-batch costs (a tick, five round trips) alone.
SMALL_BATCH = 10
READ_TIMEOUT = 1.0  # > 0, as in the loop: the Redis bus then asks XINFO GROUPS beside it
EVENT_GOAL = 10_000.0
BIG_MISSION = 200  # hosts; a bigger mission's run takes seconds, so it gets --big-reps rounds


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
    batch: int = READ_BATCH  # the most events one read returns
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
                    engine, ports.bus, mission_id, len(tasks), tick=self.tick, batch=self.batch
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
    engine: MissionEngine,
    bus: EventBus,
    mission_id: str,
    expected: int,
    *,
    tick: bool,
    batch: int = READ_BATCH,
) -> float:
    applied = 0
    start = time.perf_counter()
    while applied < expected:
        if tick:
            engine.tick()
        deliveries = bus.read(mission_id, timeout=READ_TIMEOUT, max_count=batch)
        if not deliveries:
            raise RuntimeError(f"stream ran dry after {applied} of {expected} events")
        engine.handle_deliveries(deliveries)
        applied += len(deliveries)
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
            f"engine, Redis, as its loop, results {SMALL_BATCH} at a time (as they trickle in)": (
                EngineRun(self.redis_ports, specs, self.templates, tick=True, batch=SMALL_BATCH)
            ),
            FLOOR: SerialisationFloor(specs, self.templates, self.signer),
            "raw redis-py XREADGROUP COUNT 500 + XACK": lambda: raw_stream(self.client, raw_phases),
        }
        results = rounds(methods, reps, warm=warm)
        self.breakdowns[hosts] = (self.breakdown(specs), redis_run.state_bytes, 2 * hosts)
        return results

    def breakdown(self, specs: Sequence[HostSpec]) -> dict[str, float]:
        """One more Redis run with every port call timed: seconds per part, summed; and
        the Redis server's CPU seconds meanwhile (``redis_cpu``)."""
        totals: dict[str, float] = {}
        proxies: list[Timed] = []
        server = RedisCpu(self.client)

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
            server.start() if on else server.stop()

        parts = EngineRun(ports, specs, self.templates, timing=timing)()
        totals["drain"] = sum(parts.values())
        totals["redis_cpu"] = server.seconds
        return totals


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
            floor_us = results[FLOOR]["total"] * 1e6 / events
            server_us = totals["redis_cpu"] * 1e6 / events
            goals.append(
                f"result events applied by one engine on Redis, {hosts} hosts: "
                f"{on_redis:,.0f}/s (goal {EVENT_GOAL:,.0f}/s: "
                f"{'met' if on_redis >= EVENT_GOAL else 'NOT met'}); the most a synchronous "
                f"engine with these models could reach here if its own logic were free: "
                f"{1e6 / (floor_us + server_us):,.0f}/s (the models' JSON work "
                f"{floor_us:.0f} µs + Redis server CPU {server_us:.0f} µs per event)"
            )
    finally:
        # The workers of section 3 run as ``reaper worker`` does, with Python's settings.
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    return out, goals
