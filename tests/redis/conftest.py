"""Fixtures of the Redis adapter tests: clients on the session's redis-server (flushed for each
test), on fakeredis, and a private server with AOF for tests that restart it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import pytest
import redis

from infra.redis.connection import connect
from reaper_engine.signing import TaskSigner
from tests.redis_server import RedisServer

SECRET = b"redis-adapter-test-secret-0123456789"


@pytest.fixture
def signer() -> TaskSigner:
    return TaskSigner(SECRET)


@pytest.fixture
def new_client(
    redis_server: RedisServer, redis_client: redis.Redis
) -> Iterator[Callable[[], redis.Redis]]:
    """``new_client()``: another client (its own connection pool) of the session's server,
    flushed like ``redis_client``, as a second engine or worker process would have."""
    made: list[redis.Redis] = []

    def make() -> redis.Redis:
        client = connect(redis_server.url)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def any_client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """The same test on fakeredis and on the real server."""
    if request.param == "fakeredis":
        client: redis.Redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    else:
        client = connect(request.getfixturevalue("redis_server").url)
        client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with AOF (fsync always), free to be restarted by the test."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
