"""What every fleet command shares: its options, connecting to Redis, and turning Redis
errors into one-line messages. redis, rq and the engine are imported inside the functions:
``reaper --help`` and ``reaper scan`` never load them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from overseer.cli.common import (
    EXIT_USAGE,
    CliError,
    config_option,
    load,
)

if TYPE_CHECKING:
    from infra.config_files import LoadedConfig
    from overseer.fleet.setup import FleetSetup, RedisPorts
    from overseer.service import OverseerService

EXIT_UNAVAILABLE = 5  # Redis unreachable at start, or failing during the command
EXIT_WORKER_FAILED = 6  # reaper worker: its work loop ended on an error a reconnect cannot fix


@dataclass(frozen=True, slots=True)
class FleetArgs:
    """The options every fleet command takes, gathered by :func:`fleet_options`."""

    config_path: Path | None
    redis_url: str | None = field(repr=False)  # may hold a password
    secret_file: Path | None
    insecure: bool


def fleet_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--redis-url``, ``--secret-file``, ``--insecure`` and ``--config``, handed to the
    command as one ``fleet: FleetArgs`` argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fleet = FleetArgs(
            config_path=kwargs.pop("config_path"),
            redis_url=kwargs.pop("redis_url"),
            secret_file=kwargs.pop("secret_file"),
            insecure=kwargs.pop("insecure"),
        )
        return func(*args, fleet=fleet, **kwargs)

    wrapped: Callable[..., Any] = click.option(
        "--insecure",
        is_flag=True,
        help="Run without a task-signing secret (unsigned tasks; a warning is logged).",
    )(wrapper)
    wrapped = click.option(
        "--secret-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="File holding the task-signing secret (default: $REAPER_SECRET, "
        "$REAPER_SECRET_FILE, [fleet] secret_file).",
    )(wrapped)
    wrapped = click.option(
        "--redis-url",
        default=None,
        metavar="URL",
        help="Redis to use (default: $REDIS_URL, [fleet] redis_url, redis://localhost:6379/0).",
    )(wrapped)
    return config_option(wrapped)


def connect_fleet(
    fleet: FleetArgs, *, read_only: bool = False
) -> tuple[LoadedConfig, FleetSetup, RedisPorts]:
    """Load the config, resolve Redis and the secret, connect. ``read_only`` commands order
    no work, so they need no secret."""
    import secrets

    from infra.redis.connection import RedisUnavailableError
    from infra.signing import SECRET_ENV
    from overseer.fleet.setup import open_redis_ports, resolve
    from reaper_engine.errors import ConfigError
    from reaper_engine.signing import SecretError

    loaded = load(fleet.config_path)
    env: dict[str, str] = dict(os.environ)
    insecure = fleet.insecure
    if read_only:
        # No secret needed, but resolve() would warn that tasks are unsigned, which is
        # noise for a command that sends none. A throwaway key instead: no warning, and a
        # task published by mistake would carry a signature no worker accepts.
        env[SECRET_ENV] = secrets.token_hex(32)
        insecure = False
    try:
        setup = resolve(
            loaded.config.fleet,
            redis_url=fleet.redis_url,
            # A --secret-file would win over that key (and must be readable): not asked for.
            secret_file=None if read_only else fleet.secret_file,
            insecure=insecure,
            env=env,
        )
    except SecretError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    try:
        ports = open_redis_ports(setup)
    except RedisUnavailableError as err:
        raise CliError(str(err), EXIT_UNAVAILABLE) from None
    except ConfigError as err:  # a malformed URL is a usage error, not an outage
        raise CliError(str(err), EXIT_USAGE) from None
    return loaded, setup, ports


def redis_failure(url: str, err: Exception, *, outage: bool) -> str:
    """One line naming the (redacted) URL and the cause, worded as at start-up."""
    import urllib.parse

    from infra.redis.connection import redact

    cause = str(err) or type(err).__name__
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    if password:  # should a library ever echo it
        cause = cause.replace(password, "***").replace(urllib.parse.unquote(password), "***")
    what = "is unavailable" if outage else "answered with an error"
    return f"Redis at {redact(url)} {what}: {type(err).__name__}: {cause}"


class RedisFailedError(CliError):
    """Redis failed in the middle of a command; ``outage``: unreachable or timed out (it may
    come back), rather than answering with an error."""

    def __init__(self, message: str, *, outage: bool) -> None:
        super().__init__(message, EXIT_UNAVAILABLE)
        self.outage = outage


@contextlib.contextmanager
def redis_errors(setup: FleetSetup) -> Iterator[None]:
    """A Redis failure in the middle of a command: ``error: ...`` and exit 5, no traceback.

    The client has already retried with backoff (seconds) before an error gets here.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except RedisError as err:
        outage = isinstance(err, RedisConnectionError | RedisTimeoutError)
        message = redis_failure(setup.redis_url, err, outage=outage)
        raise RedisFailedError(message, outage=outage) from None


def service_for(ports: RedisPorts) -> OverseerService:
    from overseer.bootstrap import bootstrap

    return bootstrap(store=ports.store, queue=ports.queue, bus=ports.bus, run_loops=False)


def stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
