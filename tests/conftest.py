"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import structlog

from infra.memory import InMemoryMissionStore
from infra.redis.connection import connect
from tests.redis_server import RedisServer, require_redis_server

if TYPE_CHECKING:
    import redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (skipped without the binary, failed under CI).

    Tests share it: flush it (or use a fresh key prefix) before use, and never restart it;
    a test that needs a restart starts its own ``RedisServer``.
    """
    binary = require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis-server"), binary=binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's server, flushed first; closed at teardown."""
    client = connect(redis_server.url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _structlog_config_is_per_test() -> Iterator[None]:
    """CLI tests configure logging (a level, a renderer) as the commands do; restore it, so a
    later test's ``capture_logs`` sees every event whatever ran before it."""
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture(autouse=True, scope="session")
def _unconfigured_logs_go_nowhere() -> Iterator[None]:
    """structlog's default prints to stdout: a thread a test left logging (a server winding
    down after its test) would print into the runner's own output. Rendered, not printed:
    ``capture_logs`` and the tests that configure logging themselves are unaffected."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    try:
        yield
    finally:
        structlog.configure(**saved)


@pytest.fixture(autouse=True, scope="session")
def _in_memory_saves_are_verified() -> Iterator[None]:
    """Every in-memory save is read back and compared with the state saved: a change the
    stores' deltas cannot see (a value mutated in place) fails the test that made it."""
    InMemoryMissionStore.verify_saves = True
    try:
        yield
    finally:
        InMemoryMissionStore.verify_saves = False
