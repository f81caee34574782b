"""structlog configuration: JSON lines on request, with mission/host/task ids bound."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from agents.os_agents import LinuxAgent
from agents.simulation import SimulatedLab
from infra.logging import configure_logging
from infra.memory import InMemoryEventBus, InMemoryTaskQueue
from reaper_engine.models import Action
from tests.factories import clock, host_spec, make_task


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_agent_events_carry_mission_host_and_task_ids(json_log):
    c = clock()
    agent = LinuxAgent(InMemoryTaskQueue(), InMemoryEventBus(), SimulatedLab(c), clock=c)
    task = make_task(
        Action.SCAN, host=host_spec("lnx", options={"fail": "unreachable"}), now=c.now()
    )
    agent.handle(task)
    events = lines(json_log)
    failed = [e for e in events if e["event"] == "task_failed"]
    assert len(failed) == 1
    assert failed[0]["mission_id"] == "m1"
    assert failed[0]["host_id"] == "lnx"
    assert failed[0]["task_id"] == "t1"
    assert failed[0]["level"] == "warning"
    assert "timestamp" in failed[0]
    # Context is unbound after the task: later events do not inherit it.
    structlog.get_logger().info("after")
    assert "task_id" not in lines(json_log)[-1]


def test_level_filters_and_console_format_renders_text():
    stream = io.StringIO()
    configure_logging("console", "warning", stream=stream)
    try:
        log = structlog.get_logger()
        log.info("hidden_event")
        log.warning("shown_event", host_id="h1")
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "hidden_event" not in text
    assert "shown_event" in text
    assert "host_id=h1" in text
    assert not text.lstrip().startswith("{")


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_a_logged_traceback_never_shows_the_frames_local_variables(fmt):
    stream = io.StringIO()
    configure_logging(fmt, "info", stream=stream)

    def connect() -> None:
        # Built at run time: the traceback's source lines show code, and code is no secret.
        password = "-".join(["hunter2", "do", "not", "print"])
        raise ConnectionError(f"refused ({len(password)} chars sent)")

    try:
        try:
            connect()
        except ConnectionError:
            structlog.get_logger().exception("engine_loop_error")
    finally:
        structlog.reset_defaults()
    out = stream.getvalue()
    assert "ConnectionError" in out
    assert "engine_loop_error" in out
    assert "hunter2-do-not-print" not in out
