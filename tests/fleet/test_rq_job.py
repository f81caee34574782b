"""The RQ job function: signed tasks run and report; refused ones report why, or dead-letter."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agents.os_agents import LinuxAgent
from agents.rq_job import JobContext, install, run_task
from agents.simulation import SimulatedLab
from agents.transports.router import TransportRouter
from infra.memory import InMemoryEventBus, InMemoryTaskQueue
from reaper_engine.models import Action, ResultStatus, TransportKind
from reaper_engine.signing import TaskSigner
from tests.factories import clock, make_task

SECRET = b"job-test-secret-0123456789"


@pytest.fixture
def setup() -> Iterator[tuple[JobContext, InMemoryEventBus, list[tuple[str, str]]]]:
    the_clock = clock()
    bus = InMemoryEventBus()
    lab = SimulatedLab(clock=the_clock)
    agent = LinuxAgent(
        InMemoryTaskQueue(), bus, TransportRouter({TransportKind.SIMULATED: lab}), clock=the_clock
    )
    dead: list[tuple[str, str]] = []
    context = JobContext(
        agent=agent,
        signer=TaskSigner(SECRET),
        dead_letter=lambda payload, error: dead.append((payload, error)),
    )
    install(context)
    yield context, bus, dead
    install(None)


def results(bus: InMemoryEventBus, mission_id: str = "m1"):
    return [d.event for d in bus.read(mission_id, timeout=0)]


def test_a_signed_task_runs_and_its_result_is_published(setup):
    context, bus, dead = setup
    task = make_task(Action.SCAN)
    summary = run_task(TaskSigner(SECRET).seal(task))
    [event] = results(bus)
    assert (event.task_id, event.status) == (task.task_id, ResultStatus.SUCCESS)
    assert summary == {"status": "success", "task_id": task.task_id, "summary": event.summary}
    assert context.agent.handled == 1
    assert dead == []


@pytest.mark.parametrize(
    ("signer", "code"),
    [(TaskSigner(None), "TASK_UNSIGNED"), (TaskSigner(b"x" * 20), "TASK_BAD_SIGNATURE")],
)
def test_unsigned_and_forged_tasks_are_reported_not_run(setup, signer, code):
    context, bus, _dead = setup
    task = make_task(Action.SCAN)
    assert run_task(signer.seal(task))["code"] == code
    [event] = results(bus)
    assert (event.task_id, event.status, event.error_code) == (
        task.task_id,
        ResultStatus.ERROR,
        code,
    )
    assert event.retriable is False
    assert context.agent.handled == 0  # nothing ran
    assert context.rejected[code] == 1


def test_an_expired_task_is_reported_as_retriable(setup):
    context, bus, _ = setup
    task = make_task(Action.SCAN, timeout=60)
    context.agent.clock.advance(61)
    run_task(TaskSigner(SECRET).seal(task))
    [event] = results(bus)
    assert (event.error_code, event.retriable) == ("TASK_EXPIRED", True)


@pytest.mark.parametrize("envelope", ["garbage", 42, json.dumps({"v": 1, "task": "{}"})])
def test_an_envelope_naming_no_task_is_dead_lettered(setup, envelope):
    context, bus, dead = setup
    assert run_task(envelope)["status"] == "rejected"
    assert results(bus) == []
    [(_payload, error)] = dead
    assert "TASK_MALFORMED" in error or "not an envelope" in error
    assert sum(context.rejected.values()) == 1


def test_without_a_context_the_job_refuses_to_run():
    install(None)
    with pytest.raises(RuntimeError, match="reaper worker"):
        run_task("{}")


def test_a_signed_task_in_someone_elses_job_is_dead_lettered_without_a_result(setup):
    context, bus, dead = setup
    context.current_job_id = lambda: "some-other-job"
    context.job_id_for = lambda task_id: task_id
    task = make_task(Action.SCAN)
    assert run_task(TaskSigner(SECRET).seal(task))["code"] == "TASK_JOB_MISMATCH"
    assert results(bus) == []  # the task's own job may still run: report nothing for it
    [(_, error)] = dead
    assert "TASK_JOB_MISMATCH" in error
    assert context.agent.handled == 0


def test_a_task_in_its_own_job_runs(setup):
    context, bus, _ = setup
    assert results(bus) == []
    task = make_task(Action.SCAN)
    context.current_job_id = lambda: task.task_id
    context.job_id_for = lambda task_id: task_id
    assert run_task(TaskSigner(SECRET).seal(task))["status"] == "success"
    assert [e.task_id for e in results(bus)] == [task.task_id]


# -- each task id runs once ------------------------------------------------------------------


def test_a_task_already_claimed_is_skipped_without_a_result(setup):
    context, bus, dead = setup
    claims: list[tuple[str, str]] = []

    def claim(task, token):
        claims.append((task.task_id, token))
        return len(claims) == 1  # the first run only

    context.claim = claim
    envelope = TaskSigner(SECRET).seal(make_task(Action.SCAN))
    assert run_task(envelope)["status"] == "success"
    assert run_task(envelope) == {"status": "duplicate", "task_id": "t1"}
    assert [e.task_id for e in results(bus)] == ["t1"]  # one result: the first run's
    assert context.agent.handled == 1
    assert context.rejected["TASK_DUPLICATE"] == 1
    assert claims[0][1] != claims[1][1]  # each run has its own token
    assert dead == []


def test_a_claim_redis_cannot_answer_is_asked_again_with_the_same_token(setup, monkeypatch):
    context, bus, _ = setup
    tokens: list[str] = []

    def claim(task, token):
        tokens.append(token)
        if len(tokens) < 3:
            raise ConnectionError("Redis is restarting")
        return True

    context.claim = claim
    monkeypatch.setattr(context.stop, "wait", lambda timeout=None: False)  # no real backoff
    assert run_task(TaskSigner(SECRET).seal(make_task(Action.SCAN)))["status"] == "success"
    assert len(tokens) == 3
    assert len(set(tokens)) == 1  # a lost reply's claim is recognised as ours
    assert [e.task_id for e in results(bus)] == ["t1"]


def test_the_time_limit_ends_before_any_result_is_published(setup, monkeypatch):
    context, bus, _ = setup
    order: list[str] = []
    context.disarm = lambda: order.append("disarm")
    real_publish = bus.publish

    def publish(event):
        order.append("publish")
        real_publish(event)

    monkeypatch.setattr(bus, "publish", publish)
    run_task(TaskSigner(SECRET).seal(make_task(Action.SCAN)))
    run_task(TaskSigner(None).seal(make_task(Action.SCAN, task_id="t2")))  # a refusal
    assert order == ["disarm", "publish", "disarm", "publish"]
