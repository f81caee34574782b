"""Connecting to Redis: one client per process, retried through restarts, never leaking secrets.

URLs carry passwords (``redis://user:secret@host``, ``rediss://...``, ``?password=``), so
every message and log line shows ``redact(url)``, never the URL itself.
"""

# redis and rq are imported where they are used: nothing may import them at module level
# (tests/unit/test_layout.py), so that only commands that use Redis pay for them.
# ruff: noqa: PLC0415

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING

import structlog

from reaper_engine.errors import ConfigError, ReaperError

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)

DEFAULT_SOCKET_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_RETRIES = 6  # 0.1 + 0.2 + ... capped at 2 s: rides out a restart of ~6 s
HEALTH_CHECK_INTERVAL = 30

_MASK = "***"
_SECRET_PARAMS = {"password"}
_FALLBACK_USERINFO = re.compile(r"(//[^/@:]*:)[^/@]*@")


class RedisUnavailableError(ReaperError):
    """Redis cannot be reached or refused us (names the redacted URL and the cause)."""


def redact(url: str) -> str:
    """``url`` with its password (userinfo or ``?password=``) replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        # Not even parseable: mask anything that looks like user:password@ all the same.
        return _FALLBACK_USERINFO.sub(rf"\1{_MASK}@", url)
    out = url
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        out = out.replace(f"//{userinfo}@", f"//{user}:{_MASK}@", 1)
    if parts.query:
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urllib.parse.urlencode(
                [(k, _MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
            )
            out = out.replace(f"?{parts.query}", f"?{query}", 1)
    return out


def connect(
    url: str,
    *,
    socket_timeout: float | None = DEFAULT_SOCKET_TIMEOUT,
    socket_connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff_base: float = 0.1,
    backoff_cap: float = 2.0,
    client_name: str | None = None,
) -> redis.Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``); connects lazily.

    Bytes in and out (RQ needs ``decode_responses=False``). A command that fails on a dropped
    connection or a timeout is retried ``retries`` times with exponential backoff, so a Redis
    restart looks like a slow command, not an error. ``socket_timeout`` also bounds how long
    one blocking command may wait: the adapters block in slices shorter than it.
    """
    import redis as redis_lib
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry

    try:
        client = redis_lib.Redis.from_url(
            url,
            decode_responses=False,
            protocol=2,  # the adapters parse RESP2 replies
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=HEALTH_CHECK_INTERVAL,
            retry=Retry(ExponentialBackoff(cap=backoff_cap, base=backoff_base), retries),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            client_name=client_name,
        )
    except ValueError as err:
        # No config key named: the URL may as well have come from --redis-url or $REDIS_URL.
        raise ConfigError(f"invalid Redis URL {redact(url)}: {err}") from None
    log.debug("redis_client_created", url=redact(url))
    return client


def ping_or_raise(client: redis.Redis, url: str) -> None:
    """Check that Redis answers; RedisUnavailableError (redacted URL, cause) if it does not."""
    from redis.exceptions import RedisError

    try:
        client.ping()
    except RedisError as err:
        cause = _scrub(str(err) or type(err).__name__, url)
        raise RedisUnavailableError(
            f"Redis at {redact(url)} is unavailable: {type(err).__name__}: {cause}"
        ) from err


def is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` says Redis could not be reached or answered too late (a restart, a
    network cut, a server still loading its AOF): something a reconnect fixes, unlike a bug."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(err, RedisConnectionError | RedisTimeoutError)


def blocking_slice(client: redis.Redis) -> float | None:
    """The longest one blocking command may wait for its reply to beat the socket timeout.

    A blocking command that outlives ``socket_timeout`` fails with TimeoutError and would be
    retried; waiting in slices shorter than it keeps long waits legal. None: no limit.
    """
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if not isinstance(timeout, int | float) or timeout <= 0:
        return None
    return max(float(timeout) * 0.5, float(timeout) - 1.0)


def as_text(value: object) -> str:
    """A reply value as text: the client returns bytes (``decode_responses=False``)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password from ``text`` should a library ever echo it."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return text
    if password:
        text = text.replace(password, _MASK).replace(urllib.parse.unquote(password), _MASK)
    return text
