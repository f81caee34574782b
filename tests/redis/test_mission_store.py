"""RedisMissionStore beyond the port contract: engines racing on real Redis, summaries."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from infra.redis.keys import RedisKeys
from infra.redis.store import RedisMissionStore, UnreadableSummary
from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import (
    Action,
    MissionState,
    MissionStatus,
    MissionSummary,
    PendingTask,
)
from tests.factories import host_spec, make_record, make_state, make_task

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
    # One key per mission: its head, then a field per part (here its one host).
    assert set(any_client.hkeys(keys.mission("m1"))) == {
        b"version",
        b"rev",
        b"head",
        b"hosts",
        b"h:h1",
    }


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


# -- saved in parts ---------------------------------------------------------------------------


def _three_hosts(mission_id: str = "m1") -> MissionState:
    return make_state(host_spec("h1"), host_spec("h2"), host_spec("h3"), mission_id=mission_id)


def _tamper_host(client: redis.Redis, mission_id: str, host_id: str, marker: str) -> None:
    """Change a host's stored document behind the store's back."""
    key = RedisKeys(PREFIX).mission(mission_id)
    doc = json.loads(client.hget(key, f"h:{host_id}"))
    doc["outcome_detail"] = marker
    client.hset(key, f"h:{host_id}", json.dumps(doc))


def test_a_save_rewrites_only_the_hosts_that_changed(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    state = store.create(_three_hosts())
    _tamper_host(any_client, "m1", "h1", "written behind the store's back")

    state.hosts["h2"].failure_count = 2
    store.save(state)

    loaded = store.load("m1")
    assert loaded is not None
    assert loaded.hosts["h2"].failure_count == 2
    # h1 did not change, so it was not written: the tampered document is still there.
    assert loaded.hosts["h1"].outcome_detail == "written behind the store's back"


def test_a_copy_this_store_did_not_see_last_is_saved_in_full(any_client):
    mine = RedisMissionStore(any_client, prefix=PREFIX)
    other = RedisMissionStore(any_client, prefix=PREFIX)
    pending = PendingTask(task=make_task(Action.SCAN, mission_id="m1", task_id="t1"))
    mine.create(_three_hosts())
    loaded_by_other = other.load("m1")
    assert loaded_by_other is not None
    copy = other.save(loaded_by_other)  # version 2, which this store never saw
    _tamper_host(any_client, "m1", "h1", "stale")
    any_client.hset(RedisKeys(PREFIX).mission("m1"), "p:t1", pending.model_dump_json())

    saved = mine.save(copy)  # nothing about the stored parts can be assumed: all rewritten

    loaded = other.load("m1")
    assert loaded is not None
    assert loaded.hosts["h1"].outcome_detail == ""
    assert loaded.pending_tasks == {}
    assert loaded == saved


def test_a_batch_larger_than_one_script_call_round_trips(any_client):
    # More entries than the Lua script passes to one HSET (500 pairs a call).
    specs = [host_spec(f"h{i:04d}") for i in range(1201)]
    store = RedisMissionStore(any_client, prefix=PREFIX)
    state = store.create(make_state(*specs, mission_id="big"))
    for i in range(0, 1201, 2):
        state.hosts[f"h{i:04d}"].failure_count = 1
        task = make_task(mission_id="big", task_id=f"t{i}", host=specs[i])
        state.pending_tasks[task.task_id] = PendingTask(task=task)
    saved = store.save(state)
    for i in range(0, 1201, 4):
        del saved.pending_tasks[f"t{i}"]
    saved = store.save(saved)

    loaded = RedisMissionStore(any_client, prefix=PREFIX).load("big")
    assert loaded == saved
    assert len(loaded.pending_tasks) == 300
    assert sum(h.failure_count for h in loaded.hosts.values()) == 601


def test_a_mission_saved_as_one_document_still_loads_and_is_resaved_in_parts(any_client):
    # The layout before parts: the whole state in the mission hash's "doc" field.
    keys = RedisKeys(PREFIX)
    state = _three_hosts().model_copy(update={"version": 4})
    any_client.hset(keys.mission("m1"), mapping={"version": 4, "doc": state.model_dump_json()})
    store = RedisMissionStore(any_client, prefix=PREFIX)

    loaded = store.load("m1")
    assert loaded == state
    assert loaded is not None
    loaded.hosts["h3"].locked = True
    saved = store.save(loaded)

    assert b"doc" not in any_client.hkeys(keys.mission("m1"))
    assert RedisMissionStore(any_client, prefix=PREFIX).load("m1") == saved


# -- when Redis loses acknowledged writes ------------------------------------------------------


def _snapshot(client: redis.Redis, mission_id: str) -> bytes:
    return client.dump(RedisKeys(PREFIX).mission(mission_id))


def _roll_back(client: redis.Redis, mission_id: str, snapshot: bytes) -> None:
    """What a crash under ``appendfsync everysec``, or a failover, does: acknowledged
    writes gone, the mission as it was at the snapshot."""
    client.restore(RedisKeys(PREFIX).mission(mission_id), 0, snapshot, replace=True)


def test_a_version_number_reached_twice_after_a_lost_write_mixes_nothing(any_client):
    engine_a = RedisMissionStore(any_client, prefix=PREFIX)
    engine_b = RedisMissionStore(any_client, prefix=PREFIX)
    kept = engine_a.create(_three_hosts())  # version 1
    before = _snapshot(any_client, "m1")
    kept.hosts["h2"].outcome_detail = "A's version 2"
    kept = engine_a.save(kept)
    _roll_back(any_client, "m1", before)  # A's version 2 is lost
    other = engine_b.load("m1")
    assert other is not None
    other.hosts["h2"].outcome_detail = "B's version 2"
    b_saved = engine_b.save(other)  # version 2 again, with other parts

    kept.hosts["h1"].failure_count = 3  # A goes on with the copy it kept, at "version 2"
    with pytest.raises(ConcurrentUpdateError, match="not the copy this store saw"):
        engine_a.save(kept)

    assert engine_a.load("m1") == b_saved  # what B saved, nothing of A's delta
    reloaded = engine_a.load("m1")
    assert reloaded is not None
    reloaded.hosts["h1"].failure_count = 3
    again = engine_a.save(reloaded)
    assert engine_b.load("m1") == again


def test_after_a_lost_write_one_engine_reloads_and_loses_no_later_change(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    spec = host_spec("h1")
    state = store.create(make_state(spec, mission_id="m1"))
    before = _snapshot(any_client, "m1")
    state.pending_tasks["lost"] = PendingTask(task=make_task(host=spec, task_id="lost"))
    state = store.save(state)
    _roll_back(any_client, "m1", before)

    with pytest.raises(ConcurrentUpdateError):
        store.save(state)  # the engine's kept copy: its version is gone
    state = store.load("m1")  # as the engine does on a conflict
    assert state is not None
    state.pending_tasks["t2"] = PendingTask(task=make_task(host=spec, task_id="t2"))
    state = store.save(state)
    del state.pending_tasks["t2"]
    state.completed_tasks["t2"] = make_record("t2", "h1")
    saved = store.save(state)

    loaded = RedisMissionStore(any_client, prefix=PREFIX).load("m1")
    assert loaded == saved
    assert loaded is not None
    assert loaded.pending_tasks == {}


def test_a_mission_key_of_another_type_fails_the_save_and_writes_nothing(any_client):
    store = RedisMissionStore(any_client, prefix=PREFIX)
    state = store.create(_three_hosts())
    state.hosts["h1"].failure_count = 1
    key = RedisKeys(PREFIX).mission("m1")
    any_client.delete(key)
    any_client.set(key, "written by something else")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.save(state)

    assert any_client.get(key) == b"written by something else"
