"""EngineHost: one owner per mission, adoption of missions created elsewhere, hand-over."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agents.os_agents import AGENTS
from agents.pool import AgentPool
from agents.simulation import SimulatedLab
from agents.transports.router import TransportRouter
from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue, LocalLeases
from overseer.bootstrap import bootstrap
from overseer.fleet.engine_host import EngineHost
from reaper_engine.models import MissionOptions, MissionStatus, TransportKind
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

    def host(self, name: str) -> EngineHost:
        return EngineHost(
            store=self.store,
            queue=self.queue,
            bus=self.bus,
            leases=self.leases,
            engine_id=name,
            poll_seconds=0.05,
            lease_seconds=10,
            max_wait=0.2,
        )

    def create(self, *hosts: str) -> str:
        service = bootstrap(store=self.store, queue=self.queue, bus=self.bus, run_loops=False)
        specs = [host_spec(h, options={"process_table": "linux-ci"}) for h in hosts]
        return service.create_mission("reap", specs, MissionOptions()).mission_id


@pytest.fixture
def world() -> Iterator[World]:
    ticker = Ticker()
    w = World(
        InMemoryMissionStore(), InMemoryTaskQueue(), InMemoryEventBus(), LocalLeases(ticker), ticker
    )
    router = TransportRouter({TransportKind.SIMULATED: SimulatedLab()})
    agents = [cls(w.queue, w.bus, router) for cls in AGENTS.values()]
    pool = AgentPool(agents).start()
    yield w
    assert pool.stop(10)


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


def test_a_dead_hosts_mission_is_adopted_once_its_lease_lapses(world: World):
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
