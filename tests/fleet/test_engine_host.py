"""EngineHost: one owner per mission, adoption of missions created elsewhere, hand-over."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from agents.os_agents import AGENTS
from agents.pool import AgentPool
from agents.simulation import SimulatedLab
from agents.transports.router import TransportRouter
from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue, LocalLeases
from overseer.bootstrap import bootstrap
from overseer.fleet.engine_host import EngineHost
from reaper_engine import SCHEMA_VERSION
from reaper_engine.models import MissionOptions, MissionState, MissionStatus, TransportKind
from tests.factories import host_spec
from tests.integration.conftest import wait_until


class Ticker:
    """A monotonic clock the test moves: leases lapse when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    store: InMemoryMissionStore
    queue: InMemoryTaskQueue
    bus: InMemoryEventBus
    leases: LocalLeases
    ticker: Ticker
    pools: list[AgentPool] = field(default_factory=list)

    def start_agents(self) -> None:
        router = TransportRouter({TransportKind.SIMULATED: SimulatedLab()})
        agents = [cls(self.queue, self.bus, router) for cls in AGENTS.values()]
        self.pools.append(AgentPool(agents).start())

    def host(self, name: str, **overrides: Any) -> EngineHost:
        options: dict[str, Any] = {"poll_seconds": 0.05, "lease_seconds": 10, "max_wait": 0.2}
        return EngineHost(
            store=self.store,
            queue=self.queue,
            bus=self.bus,
            leases=self.leases,
            engine_id=name,
            **(options | overrides),
        )

    def create(self, *hosts: str) -> str:
        service = bootstrap(store=self.store, queue=self.queue, bus=self.bus, run_loops=False)
        specs = [host_spec(h, options={"process_table": "linux-ci"}) for h in hosts]
        return service.create_mission("reap", specs, MissionOptions()).mission_id


@pytest.fixture
def idle_world() -> Iterator[World]:
    """In-memory ports and no agents yet: nothing moves until ``start_agents()``."""
    ticker = Ticker()
    w = World(
        InMemoryMissionStore(), InMemoryTaskQueue(), InMemoryEventBus(), LocalLeases(ticker), ticker
    )
    yield w
    assert all(pool.stop(10) for pool in w.pools)


@pytest.fixture
def world(idle_world: World) -> World:
    idle_world.start_agents()
    return idle_world


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every event logged, at every level, whatever a CLI test configured before."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


def status(world: World, mission_id: str) -> MissionStatus:
    state = world.store.load(mission_id)
    assert state is not None
    return state.status


def test_a_host_adopts_a_mission_created_elsewhere_and_completes_it(world: World):
    mission_id = world.create("h1", "h2")
    host = world.host("engine-a")
    stop = threading.Event()
    runner = threading.Thread(target=host.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_until(lambda: status(world, mission_id).is_terminal, timeout=60, what="mission to end")
        assert status(world, mission_id) is MissionStatus.COMPLETED
        # Finished missions are let go: the lease is free again.
        wait_until(lambda: host.missions == [], what="the engine to let go")
        assert world.leases.acquire(mission_id, "someone-else", 10)
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert host.adopted == 1


def test_only_one_of_two_hosts_runs_a_mission(world: World):
    world.queue.interrupt()  # irrelevant to ownership; agents may run tasks meanwhile
    mission_id = world.create("h1")
    a, b = world.host("engine-a"), world.host("engine-b")
    a.step()
    b.step()
    try:
        assert (a.missions, b.missions) == ([mission_id], [])
    finally:
        assert a.shutdown(10)
        assert b.shutdown(10)


def test_a_dead_hosts_mission_is_adopted_once_its_lease_lapses(idle_world: World):
    # No agents until B has adopted the mission: A must not finish it before it "dies".
    world = idle_world
    mission_id = world.create("h1", "h2")
    a, b = world.host("engine-a"), world.host("engine-b")
    a.step()
    assert a.missions == [mission_id]
    # Engine A "dies": its loop stops, and nothing releases or renews its lease.
    running = a._running[mission_id]
    running.stop.set()
    world.bus.interrupt()
    running.thread.join(10)
    b.step()
    assert b.missions == []  # the lease still holds
    world.ticker.now += 11  # ... until it lapses
    b.step()
    assert b.missions == [mission_id]
    world.start_agents()
    try:
        wait_until(lambda: status(world, mission_id).is_terminal, timeout=60, what="mission to end")
        assert status(world, mission_id) is MissionStatus.COMPLETED
    finally:
        assert b.shutdown(10)


def test_a_host_that_lost_its_lease_stops_the_mission(world: World):
    mission_id = world.create("h1")
    a = world.host("engine-a")
    a.step()
    world.ticker.now += 11
    assert world.leases.acquire(mission_id, "engine-b", 10)  # a peer took over
    a.step()  # renewal fails: A stops its loop
    running = a._running.get(mission_id)
    if running is not None:
        running.thread.join(10)
        assert not running.thread.is_alive()
    a.step()
    assert a.missions == []
    assert a.shutdown(10)


def test_a_short_lease_is_refused(world: World):
    with pytest.raises(ValueError, match="lease_seconds"):
        EngineHost(
            store=world.store,
            queue=world.queue,
            bus=world.bus,
            leases=world.leases,
            poll_seconds=1,
            lease_seconds=2,
        )


def test_a_mission_a_peer_holds_is_not_loaded_and_a_finished_one_not_held(world: World):
    mission_id = world.create("h1")
    assert world.leases.acquire(mission_id, "engine-peer", 10)
    loads: list[str] = []
    load = world.store.load

    def counting_load(mid: str):
        loads.append(mid)
        return load(mid)

    world.store.load = counting_load  # type: ignore[method-assign]
    a = world.host("engine-a")
    a.step()
    a.step()
    assert (a.missions, loads) == ([], [])
    # A finished mission is looked at once, and its lease is not kept.
    service = bootstrap(store=world.store, queue=world.queue, bus=world.bus, run_loops=False)
    world.leases.release(mission_id, "engine-peer")
    service.cancel_mission(mission_id)
    loads.clear()
    a.step()
    a.step()
    assert (a.missions, loads) == ([], [mission_id])
    assert world.leases.acquire(mission_id, "engine-b", 10)


# -- missions this engine cannot read, and a failing Redis ------------------------------------


def counting_loads(world: World) -> list[str]:
    """Record every mission id the store loads from now on."""
    loads: list[str] = []
    load = world.store.load

    def counting_load(mid: str) -> MissionState | None:
        loads.append(mid)
        return load(mid)

    world.store.load = counting_load  # type: ignore[method-assign]
    return loads


def test_an_unreadable_mission_does_not_stop_the_missions_after_it(idle_world: World, logs):
    world = idle_world  # no agents: the readable missions stay running, so stay adopted
    corrupt, newer, good = world.create("h1"), world.create("h2"), world.create("h3")
    readable_newer = world.store._missions[newer].head
    world.store._missions[corrupt].head = '{"mission_id": "truncated'
    doc = json.loads(readable_newer)
    doc["schema_version"] = SCHEMA_VERSION + 1  # written by a newer Reaper: a rolling upgrade
    world.store._missions[newer].head = json.dumps(doc)
    monotonic = Ticker()
    beats: list[EngineHost] = []
    host = world.host(
        "engine-a", heartbeat=beats.append, unreadable_retry_seconds=60, monotonic=monotonic
    )
    try:
        host.step()
        assert host.missions == [good]
        assert beats == [host]  # the turn completed: the healthcheck sees it beat
        # Their leases went back at once: an engine that can read them may adopt them.
        for mission_id in (corrupt, newer):
            assert world.leases.acquire(mission_id, "engine-b", 10)
            world.leases.release(mission_id, "engine-b")

        # Set aside: not loaded (nor leased) on every poll.
        loads = counting_loads(world)
        host.step()
        host.step()
        assert corrupt not in loads
        assert newer not in loads
        assert len(beats) == 3

        # After the retry interval they are looked at again: one was repaired meanwhile.
        world.store._missions[newer].head = readable_newer
        monotonic.now += 61
        host.step()
        assert sorted(host.missions) == sorted([good, newer])
        assert loads.count(corrupt) == 1
        unreadable = [e for e in logs if e["event"] == "mission_unreadable"]
        # Logged once each, with the reason, though the corrupt one failed twice.
        assert sorted(e["mission_id"] for e in unreadable) == sorted([corrupt, newer])
        errors = {e["mission_id"]: e["error"] for e in unreadable}
        assert "not a valid MissionState" in errors[corrupt]
        assert "schema_version" in errors[newer]
        assert any(e["event"] == "mission_readable_again" for e in logs)
    finally:
        assert host.shutdown(10)


class FlakyStore(InMemoryMissionStore):
    """A store whose Redis is down for the first ``outage`` calls of ``list_ids``."""

    def __init__(self, outage: int) -> None:
        super().__init__()
        self.outage = outage

    def list_ids(self) -> list[str]:
        if self.outage > 0:
            self.outage -= 1
            raise RedisConnectionError("Connection refused")
        return super().list_ids()


class RecordingStop(threading.Event):
    """A stop event that records how long the host asks to wait, and waits no time at all;
    it sets itself once ``until()`` holds."""

    def __init__(self, until: Any) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.until = until

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        if self.until() or len(self.waits) > 100:
            self.set()
        return self.is_set()


def test_a_failing_step_is_retried_with_backoff_and_the_host_carries_on(idle_world: World, logs):
    world = idle_world
    store = FlakyStore(outage=5)
    world.store = store
    mission_id = world.create("h1")
    beats: list[int] = []
    host = world.host(
        "engine-a",
        poll_seconds=1.0,
        lease_seconds=15,
        heartbeat=lambda h: beats.append(len(h.missions)),
    )
    stop = RecordingStop(until=lambda: host.adopted == 1)
    host.run(stop)  # returns: the stop event is set once the mission is adopted
    assert host.adopted == 1
    assert store.load(mission_id) is not None
    # 1, 2, 4 s, then capped (a third of the lease, at most 5 s); the poll interval once
    # Redis answers again.
    assert stop.waits[:5] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert len(beats) == 6  # the host beat on every turn, failed ones included
    failed = [e for e in logs if e["event"] == "engine_host_step_failed"]
    assert len(failed) == 5
    assert failed[0].get("exc_info") is True  # the traceback once, then one line each
    assert all("Connection refused" in e["error"] for e in failed[1:])
    assert any(e["event"] == "engine_host_recovered" for e in logs)
