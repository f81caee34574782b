"""`reaper health` on a real redis-server, and the fleet commands on a password-protected one.

The RQ workers here are registered in Redis by the test, never run: RQ's own records are
what `reaper health --worker` reads, and the test sets them to what a dead worker leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from rq import Queue, SimpleWorker

from infra.redis.heartbeat import RQ_WORKER_PREFIX
from overseer.cli.app import reaper
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

PASSWORD = "s3cret-Pa55word"


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("REAPER_CONFIG", "REAPER_SECRET", "REAPER_SECRET_FILE", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(reaper, list(args))

    return invoke


def register_worker(client: redis.Redis, name: str) -> SimpleWorker:
    """A worker as `reaper worker --name NAME` registers it (RQ's default worker_ttl)."""
    worker = SimpleWorker([Queue("reaper-linux", connection=client)], connection=client, name=name)
    worker.register_birth()
    return worker


def beat_long_ago(client: redis.Redis, name: str, seconds: float) -> None:
    """What RQ's records look like ``seconds`` after the worker's last heartbeat: the time
    stamp that old, and the key's expiry run down by as much (RQ sets worker_ttl + 60 s)."""
    key = RQ_WORKER_PREFIX + name
    then = datetime.now(UTC) - timedelta(seconds=seconds)
    client.hset(key, "last_heartbeat", then.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    client.pexpire(key, int((420 + 60 - seconds) * 1000))


def test_a_worker_that_beat_recently_is_alive(run, client, redis_server: RedisServer):
    register_worker(client, "worker-a")
    beat_long_ago(client, "worker-a", 400)  # idle: its next beat is due at 405 s

    result = run("health", "--worker", "worker-a", "--redis-url", redis_server.url)

    assert (result.exit_code, result.output) == (0, "worker worker-a: alive\n")


def test_a_worker_that_missed_its_heartbeat_is_not_alive_though_rq_still_lists_it(
    run, client, redis_server: RedisServer
):
    register_worker(client, "worker-b")
    beat_long_ago(client, "worker-b", 440)  # e.g. SIGKILLed: RQ keeps its key 40 s more
    assert client.exists(RQ_WORKER_PREFIX + "worker-b")

    result = run("health", "--worker", "worker-b", "--redis-url", redis_server.url)

    assert result.exit_code == 1
    assert result.output == "worker worker-b: not alive (heartbeat 20 s overdue)\n"


def test_a_worker_that_stopped_is_not_alive(run, client, redis_server: RedisServer):
    worker = register_worker(client, "worker-c")
    worker.register_death()  # a clean exit: RQ keeps the key a minute longer

    result = run("health", "--worker", "worker-c", "--redis-url", redis_server.url)

    assert (result.exit_code, result.output) == (1, "worker worker-c: not alive (stopped)\n")


def test_a_worker_record_without_an_expiry_is_not_alive(run, client, redis_server: RedisServer):
    register_worker(client, "worker-d")
    client.persist(RQ_WORKER_PREFIX + "worker-d")  # RQ's beats always set one

    result = run("health", "--worker", "worker-d", "--redis-url", redis_server.url)

    assert result.exit_code == 1
    assert "never expires" in result.output


def test_an_unknown_worker_is_not_alive(run, client, redis_server: RedisServer):
    result = run("health", "--worker", "nobody", "--redis-url", redis_server.url)
    assert result.exit_code == 1
    assert result.output == "worker nobody: not alive (no such worker registered)\n"


def test_an_engine_is_alive_while_its_heartbeat_key_lives(run, client, redis_server):
    client.set("reaper:alive:engine:engine-1", "{}", px=10_000)
    alive = run("health", "--engine", "engine-1", "--redis-url", redis_server.url)
    client.delete("reaper:alive:engine:engine-1")
    gone = run("health", "--engine", "engine-1", "--redis-url", redis_server.url)
    assert (alive.exit_code, alive.output) == (0, "engine engine-1: alive\n")
    assert (gone.exit_code, gone.output) == (1, "engine engine-1: not alive\n")


# -- a Redis that requires a password ----------------------------------------------------


@pytest.fixture(scope="module")
def locked_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("locked-redis"), password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_right_password_in_the_url_works(run, locked_redis: RedisServer):
    url = f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/0"
    result = run("mission", "list", "--redis-url", url)
    assert (result.exit_code, result.output) == (0, "No missions.\n")


def test_the_right_password_in_redis_url_env_works(run, locked_redis, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://:{PASSWORD}@127.0.0.1:{locked_redis.port}/0")
    result = run("health")
    assert (result.exit_code, result.output) == (0, "redis: alive\n")


@pytest.mark.parametrize("password", ["wrong-Pa55word", None])
def test_a_wrong_or_missing_password_is_exit_5_and_never_shows_the_password(
    run, locked_redis: RedisServer, password: str | None
):
    auth = f":{password}@" if password else ""
    url = f"redis://{auth}127.0.0.1:{locked_redis.port}/0"

    result = run("mission", "list", "--redis-url", url)

    assert result.exit_code == 5
    shown = f"redis://{':***@' if password else ''}127.0.0.1:{locked_redis.port}/0"
    assert result.output.startswith(f"error: Redis at {shown} is unavailable: ")
    assert "Error" in result.output  # the cause: AuthenticationError, or NOAUTH
    assert len(result.output.splitlines()) == 1
    assert PASSWORD not in result.output
    if password:
        assert password not in result.output
