"""RedisStreamEventBus beyond the port contract: trimming, restarts, groups, several engines."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from structlog.testing import capture_logs

from infra.redis.bus import GROUP, RedisStreamEventBus
from infra.redis.connection import connect
from infra.redis.keys import RedisKeys
from reaper_engine.models import Action, ResultEvent, ResultStatus
from tests.factories import make_task, result_for
from tests.integration.conftest import wait_until
from tests.redis_server import RedisServer

PREFIX = "reaper-test"


def event(task_id: str, mission_id: str = "m1") -> ResultEvent:
    task = make_task(Action.SCAN, mission_id=mission_id, task_id=task_id)
    return result_for(task, ResultStatus.SUCCESS, summary=f"done {task_id}")


def ids(deliveries) -> list[str]:
    return [d.event.task_id for d in deliveries]


def bus_on(client: redis.Redis, **kw) -> RedisStreamEventBus:
    return RedisStreamEventBus(client, prefix=PREFIX, **kw)


def test_the_stream_stays_near_maxlen(any_client):
    bus = bus_on(any_client, maxlen=100)
    for n in range(2000):
        bus.publish(event(f"t{n}"))
    length = any_client.xlen(RedisKeys(PREFIX).events("m1"))
    # "MAXLEN ~": Redis trims whole nodes (100 entries by default), never below maxlen
    assert 100 <= length <= 200
    newest = bus.read("m1", timeout=1, max_count=1000)
    assert ids(newest)[-1] == "t1999"


def test_dead_letters_keep_the_published_bytes_and_are_bounded(any_client):
    bus = bus_on(any_client, dead_maxlen=10)
    raw = event("t1").model_dump_json()
    any_client.xadd(RedisKeys(PREFIX).events("m1"), {"event": raw})
    [delivery] = bus.read("m1", timeout=1)
    bus.dead_letter(delivery, "apply failed")
    [dead] = bus.dead_letters("m1")
    assert dead.payload == raw
    assert dead.source == RedisKeys(PREFIX).events("m1")
    for n in range(300):
        any_client.xadd(RedisKeys(PREFIX).events("m2"), {"event": f"junk {n}"})
    bus.read("m2", timeout=0, max_count=1000)
    assert any_client.xlen(RedisKeys(PREFIX).dead_events()) <= 10 + 100
    assert len(bus.dead_letters("m2")) <= 110


def test_an_entry_without_the_event_field_is_dead_lettered(any_client):
    bus = bus_on(any_client)
    any_client.xadd(RedisKeys(PREFIX).events("m1"), {"other": "x"})
    bus.publish(event("t1"))
    assert ids(bus.read("m1", timeout=1)) == ["t1"]
    [dead] = bus.dead_letters("m1")
    assert dead.payload == '{"other": "x"}'
    assert "no 'event'" in dead.error


def test_a_deleted_stream_gets_its_group_back(any_client):
    bus = bus_on(any_client)
    bus.publish(event("t1"))
    assert ids(bus.read("m1", timeout=1)) == ["t1"]
    any_client.delete(RedisKeys(PREFIX).events("m1"))  # e.g. an operator's cleanup
    bus.publish(event("t2"))
    assert ids(bus.read("m1", timeout=1)) == ["t2"]
    assert bus.pending_count("m1") == 1


def test_each_event_goes_to_one_of_two_engines(any_client):
    engines = [bus_on(any_client), bus_on(any_client)]
    assert engines[0].consumer != engines[1].consumer
    for n in range(10):
        engines[0].publish(event(f"t{n}"))
    first = engines[0].read("m1", timeout=1, max_count=4)
    second = engines[1].read("m1", timeout=1)
    assert sorted(ids(first) + ids(second)) == sorted(f"t{n}" for n in range(10))
    # engine 0 dies without acking: engine 1 takes its events over
    taken = engines[1].claim_stale("m1", min_idle_seconds=0)
    assert sorted(ids(taken)) == sorted(ids(first) + ids(second))
    consumers = {
        c["name"].decode(): c["pending"]
        for c in any_client.xinfo_consumers(RedisKeys(PREFIX).events("m1"), GROUP)
    }
    assert consumers[engines[1].consumer] == 10


@pytest.mark.redis
def test_read_blocked_in_two_engines_wakes_one_per_event(new_client):
    buses = [bus_on(new_client()), bus_on(new_client())]
    got: list[list[str]] = [[], []]
    stop = threading.Event()

    def reader(n: int) -> None:
        while not stop.is_set():
            got[n].extend(ids(buses[n].read("m1", timeout=5)))

    threads = [threading.Thread(target=reader, args=(n,), daemon=True) for n in (0, 1)]
    for t in threads:
        t.start()
    publisher = bus_on(new_client())
    for n in range(50):
        publisher.publish(event(f"t{n}"))
    wait_until(lambda: len(got[0]) + len(got[1]) == 50, what="every event delivered")
    stop.set()
    for bus in buses:
        bus.interrupt()
    for t in threads:
        t.join(5)
    assert sorted(got[0] + got[1]) == sorted(f"t{n}" for n in range(50))


def blocked_clients(client: redis.Redis) -> int:
    return int(client.info("clients")["blocked_clients"])


@pytest.mark.redis
def test_a_read_longer_than_the_socket_timeout_is_taken_in_slices(redis_server):
    client = connect(redis_server.url, socket_timeout=0.4)
    client.flushdb()
    bus = bus_on(client)
    began = time.monotonic()
    assert bus.read("m1", timeout=1.0) == []
    assert time.monotonic() - began >= 0.95
    client.close()


@pytest.mark.redis
def test_interrupt_is_not_lost_however_it_races_the_read(redis_client):
    """Interrupts fired at random moments around one reader's reads never leave it asleep.

    One long-lived reader, as an engine's loop is: each interrupt lands while it is blocked,
    about to block, or between two reads (the sticky case), and must end a read promptly.
    """
    bus = bus_on(redis_client)
    returned = threading.Semaphore(0)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            bus.read("m1", timeout=30)
            returned.release()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for attempt in range(30):
            # Jitter, not synchronisation: it moves where in the read the interrupt lands.
            time.sleep((attempt % 6) * 0.001)
            bus.interrupt()
            assert returned.acquire(timeout=5), f"interrupt {attempt} was lost"
    finally:
        stop.set()
        bus.interrupt()
        thread.join(10)
    assert not thread.is_alive()


@pytest.mark.redis
def test_the_bus_survives_a_redis_restart_with_aof(aof_server: RedisServer):
    client = connect(aof_server.url)
    bus = bus_on(client)
    bus.publish(event("before"))
    [unacked] = bus.read("m1", timeout=1)  # pending when Redis goes away
    bus.publish(event("queued"))

    aof_server.restart()

    # The same client reconnects by itself; streams, the group and its PEL came back.
    assert ids(bus.read("m1", timeout=1)) == ["queued"]
    [again] = bus.claim_stale("m1", min_idle_seconds=0, max_count=10)[:1]
    assert again.delivery_id == unacked.delivery_id
    assert again.deliveries == 2
    bus.publish(event("after"))
    assert ids(bus.read("m1", timeout=1)) == ["after"]
    client.close()


@pytest.mark.redis
def test_a_read_blocked_through_a_restart_gets_the_next_event(aof_server: RedisServer):
    client = connect(aof_server.url)
    bus = bus_on(client)
    bus.read("m1", timeout=0)  # creates the group
    got: list[list[str]] = []
    reader = threading.Thread(target=lambda: got.append(ids(bus.read("m1", timeout=20))))
    reader.start()
    wait_until(lambda: blocked_clients(client) == 1, what="the read to block")

    aof_server.restart()
    bus_on(connect(aof_server.url)).publish(event("t1"))

    reader.join(20)
    assert got == [["t1"]]
    client.close()


def test_the_mission_id_of_the_dead_letter_stream_is_refused(any_client):
    bus = bus_on(any_client)
    with pytest.raises(ValueError, match="reserved"):
        bus.publish(event("t1", mission_id="dead"))


def test_results_trimmed_away_unread_are_reported_and_not_pending(any_client):
    bus = bus_on(any_client)
    for n in range(3):
        bus.publish(event(f"t{n}"))
    assert len(bus.read("m1", timeout=1)) == 3  # read, never acknowledged: pending
    any_client.xtrim(RedisKeys(PREFIX).events("m1"), maxlen=0)  # as MAXLEN would
    with capture_logs() as logs:
        assert bus.claim_stale("m1", min_idle_seconds=0) == []
    assert bus.pending_count("m1") == 0
    [warning] = [e for e in logs if e["event"] == "results_trimmed_unread"]
    assert warning["count"] == 3
