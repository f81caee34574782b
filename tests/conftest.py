"""Fixtures shared by every test directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, require_redis_server


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
