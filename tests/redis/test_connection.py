"""connect / ping_or_raise / redact: secrets never shown, a dead Redis named clearly."""

from __future__ import annotations

import time

import pytest
import redis

from infra.redis.connection import (
    RedisUnavailableError,
    blocking_slice,
    connect,
    ping_or_raise,
    redact,
)
from reaper_engine.errors import ConfigError, ReaperError
from tests.redis_server import RedisServer, free_port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user:s3cret@redis.lab:6380/2", "redis://user:***@redis.lab:6380/2"),
        ("redis://:s3cret@redis.lab/0", "redis://:***@redis.lab/0"),
        ("rediss://default:p%40ss:w0rd@cache.example.com:6380/0", None),
        ("rediss://cache.example.com:6380", "rediss://cache.example.com:6380"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("redis://u:pw@[::1]:6379/0", "redis://u:***@[::1]:6379/0"),
        ("unix:///run/redis.sock?db=1&password=s3cret", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://localhost?password=s3cret", "redis://localhost?password=***"),
    ],
)
def test_redact_hides_passwords_and_keeps_the_rest(url, shown):
    redacted = redact(url)
    if shown is not None:
        assert redacted == shown
    for secret in ("s3cret", "p%40ss", "w0rd", "p@ss", "pw@"):
        assert secret not in redacted


def test_redact_of_an_unparseable_url_still_masks_the_password():
    redacted = redact("redis://user:s3cret@host:notaport/0")
    assert "s3cret" not in redacted
    assert "user:***@" in redacted


def test_rediss_and_passwords_reach_the_client():
    client = connect("rediss://alice:s3cret@cache.example.com:6380/3")
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["username"] == "alice"
    assert kwargs["password"] == "s3cret"
    assert kwargs["host"] == "cache.example.com"
    assert kwargs["port"] == 6380
    assert kwargs["db"] == 3
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    client.close()


def test_invalid_url_is_a_config_error_without_the_password():
    with pytest.raises(ConfigError) as err:
        connect("http://user:s3cret@host/0")
    assert "s3cret" not in str(err.value)
    assert "user:***@host" in str(err.value)


def test_unreachable_redis_raises_unavailable_naming_the_redacted_url():
    url = f"redis://admin:s3cret@127.0.0.1:{free_port()}/0"  # nothing listens there
    client = connect(url, retries=1, socket_connect_timeout=1)
    began = time.monotonic()
    with pytest.raises(RedisUnavailableError) as err:
        ping_or_raise(client, url)
    assert time.monotonic() - began < 10
    message = str(err.value)
    assert isinstance(err.value, ReaperError)
    assert "s3cret" not in message
    assert f"redis://admin:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "ConnectionError" in message  # the cause is named
    assert isinstance(err.value.__cause__, redis.exceptions.ConnectionError)
    client.close()


def _pings_served(observer: redis.Redis) -> int:
    """How many PING commands the server has executed since it started (INFO commandstats)."""
    stats = observer.info("commandstats").get("cmdstat_ping", {})
    return int(stats.get("calls", 0))


@pytest.mark.redis
def test_ping_or_raise_passes_on_a_live_server(redis_server: RedisServer):
    observer = connect(redis_server.url)
    client = connect(redis_server.url, client_name="ping-or-raise-test")
    try:
        before = _pings_served(observer)
        # Returns quietly (no RedisUnavailableError)...
        assert ping_or_raise(client, redis_server.url) is None
        # ...because this server answered a PING from this very client: the server counted
        # it (redis-py adds one health-check PING on a fresh connection, hence "at least"),
        # and PING is the last command it saw from the connection named above.
        assert _pings_served(observer) >= before + 1
        [ours] = [c for c in observer.client_list() if c.get("name") == "ping-or-raise-test"]
        assert ours["cmd"] == "ping"
    finally:
        client.close()
        observer.close()


def test_blocking_slice_stays_under_the_socket_timeout():
    assert blocking_slice(connect("redis://localhost", socket_timeout=10)) == 9.0
    assert blocking_slice(connect("redis://localhost", socket_timeout=1)) == 0.5
    assert blocking_slice(connect("redis://localhost", socket_timeout=None)) is None
