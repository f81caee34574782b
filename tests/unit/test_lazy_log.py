"""reaper_engine.log: structlog loggers created on first use, and a deferred configuration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from reaper_engine import log as lazy


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    lazy.cancel_deferred()
    structlog.reset_defaults()


def test_a_lazy_logger_logs_as_structlog_get_logger_does():
    log = lazy.get_logger("x", component="c")
    with capture_logs() as logs:
        log.info("hello", a=1)
        log.warning("careful")
        log.log(40, "by_number")
        log.bind(b=2).error("bound")
        log.msg("alias")
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("hello", "info"),
        ("careful", "warning"),
        ("by_number", "error"),
        ("bound", "error"),
        ("alias", "info"),
    ]
    assert logs[0]["a"] == 1
    assert logs[0]["component"] == "c"
    assert logs[3]["b"] == 2


def test_a_deferred_configuration_waits_for_an_event_the_gate_lets_through():
    configured: list[int] = []
    lazy.defer_configuration(
        lambda: configured.append(1), gate=lambda level, event: level >= 30 and event != "noise"
    )
    log = lazy.get_logger("t")
    with capture_logs() as logs:
        log.info("below_the_level")
        log.warning("noise")
        log.log(20, "below_by_number")
        assert configured == []
        log.warning("shown")
        assert configured == [1]
        log.info("after")  # configured: from now on structlog alone decides
    assert configured == [1]
    assert [e["event"] for e in logs] == ["shown", "after"]


def test_a_cancelled_deferral_is_never_applied():
    configured: list[int] = []
    lazy.defer_configuration(lambda: configured.append(1), gate=lambda level, event: False)
    lazy.cancel_deferred()
    with capture_logs() as logs:
        lazy.get_logger().info("logged")
    assert configured == []
    assert [e["event"] for e in logs] == ["logged"]


def test_bound_contextvars_binds_for_the_block_only():
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        with lazy.bound_contextvars(task_id="t1"):
            lazy.get_logger().info("inside")
        lazy.get_logger().info("outside")
    assert logs[0]["task_id"] == "t1"
    assert "task_id" not in logs[1]
