"""RedisMissionStore beyond the port contract: engines racing on real Redis, summaries."""

from __future__ import annotations

import json
import threading

import pytest

from infra.redis.keys import RedisKeys
from infra.redis.store import RedisMissionStore, UnreadableSummary
from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import MissionStatus, MissionSummary
from tests.factories import host_spec, make_state

PREFIX = "reaper-test"


@pytest.mark.redis
def test_two_engines_racing_read_modify_write_lose_nothing(new_client):
    """Two engines (each its own connection pool) apply N changes each with retries."""
    stores = [RedisMissionStore(new_client(), prefix=PREFIX) for _ in range(2)]
    stores[0].create(make_state(host_spec("h1"), host_spec("h2"), mission_id="m1"))
    per_engine = 200
    start = threading.Barrier(2, timeout=10)
    conflicts = [0, 0]
    errors: list[BaseException] = []

    def engine(n: int) -> None:
        store = stores[n]
        try:
            start.wait()
            for i in range(per_engine):
                while True:
                    state = store.load("m1")
                    assert state is not None
                    state.counters.results_applied += 1
                    state.hosts[f"h{n + 1}"].remember_task(f"e{n}-{i}")
                    try:
                        store.save(state)
                        break
                    except ConcurrentUpdateError:
                        conflicts[n] += 1
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=engine, args=(n,), daemon=True) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    final = stores[1].load("m1")
    assert final is not None
    assert final.counters.results_applied == 2 * per_engine
    assert final.version == 1 + 2 * per_engine
    assert final.hosts["h1"].last_tasks[-1] == f"e0-{per_engine - 1}"
    assert final.hosts["h2"].last_tasks[-1] == f"e1-{per_engine - 1}"
    [summary] = stores[0].summaries()
    assert summary == MissionSummary.of(final)


def test_summaries_follow_every_save_in_creation_order(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    assert store.summaries() == []
    for mission_id in ("m3", "m1", "m2"):
        store.create(make_state(mission_id=mission_id))
    state = store.load("m1")
    assert state is not None
    state.status = MissionStatus.RUNNING
    state.counters.findings = 7
    store.save(state)

    summaries = store.summaries()

    assert [s.mission_id for s in summaries] == ["m3", "m1", "m2"]
    assert summaries[1].status is MissionStatus.RUNNING
    assert summaries[1].findings == 7


def test_a_refused_save_leaves_the_summary_alone(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    created = store.create(make_state(mission_id="m1"))
    store.save(created)
    created.status = MissionStatus.FAILED
    with pytest.raises(ConcurrentUpdateError, match="version 2"):
        store.save(created)
    [summary] = store.summaries()
    assert summary.status is MissionStatus.PENDING


def test_missions_created_in_the_same_instant_keep_their_order(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    first = make_state(mission_id="zz")
    for mission_id in ("zz", "aa", "mm"):
        store.create(
            make_state(mission_id=mission_id).model_copy(update={"created_at": first.created_at})
        )
    assert store.list_ids() == ["zz", "aa", "mm"]


def test_saves_still_work_after_the_script_cache_is_flushed(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    created = store.create(make_state(mission_id="m1"))
    any_client.script_flush()  # as after a restart: redis-py re-sends the script
    assert store.save(created).version == 2


def test_keys_live_under_the_prefix(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    store.create(make_state(mission_id="m1"))
    keys = RedisKeys(PREFIX)
    assert sorted(k.decode() for k in any_client.keys("*")) == sorted(
        [keys.mission("m1"), keys.missions(), keys.mission_seq(), keys.summaries()]
    )
    assert set(any_client.hkeys(keys.mission("m1"))) == {b"version", b"doc"}


def test_an_unreadable_summary_hides_no_other(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    for mission_id in ("m1", "corrupt", "newer", "m2"):
        store.create(make_state(mission_id=mission_id))
    summaries = RedisKeys(PREFIX).summaries()
    any_client.hset(summaries, "corrupt", "{not json")
    newer = store.summaries()[2].model_dump(mode="json")
    newer["hosts_unreachable"] = 1  # a field only a newer Reaper knows
    any_client.hset(summaries, "newer", json.dumps(newer))

    rows = store.summary_rows()

    assert [r.mission_id for r in rows] == ["m1", "corrupt", "newer", "m2"]
    assert isinstance(rows[0], MissionSummary)
    assert isinstance(rows[3], MissionSummary)
    assert isinstance(rows[1], UnreadableSummary)
    assert "not a valid MissionSummary" in rows[1].error
    assert isinstance(rows[2], UnreadableSummary)
    assert [s.mission_id for s in store.summaries()] == ["m1", "m2"]
