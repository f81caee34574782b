"""Wiring for the fleet commands: which Redis, which secret, and the ports built on them.

Precedence for the Redis URL: ``--redis-url``, then ``$REDIS_URL``, then ``[fleet] redis_url``,
then ``redis://localhost:6379/0``. The secret, in the same order: ``--secret-file``, then
``$REAPER_SECRET``, then ``$REAPER_SECRET_FILE``, then ``[fleet] secret_file``; without one,
only ``--insecure`` runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from infra.signing import SECRET_ENV, signer_for
from reaper_engine.clock import Clock, SystemClock
from reaper_engine.config import FleetSettings
from reaper_engine.signing import TaskSigner

if TYPE_CHECKING:
    import redis

    from infra.redis.bus import RedisStreamEventBus
    from infra.redis.heartbeat import RedisHeartbeats
    from infra.redis.lease import RedisLeases
    from infra.redis.queue import RqTaskQueue
    from infra.redis.store import RedisMissionStore

log = structlog.get_logger(__name__)

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


@dataclass(frozen=True, slots=True)
class FleetSetup:
    redis_url: str = field(repr=False)  # may hold a password
    prefix: str
    signer: TaskSigner


def resolve(
    settings: FleetSettings,
    *,
    redis_url: str | None,
    secret_file: Path | None,
    insecure: bool,
    env: Mapping[str, str],
) -> FleetSetup:
    """What a fleet command runs with; raises SecretError without a secret or --insecure."""
    url = redis_url or env.get("REDIS_URL") or settings.redis_url or DEFAULT_REDIS_URL
    configured = Path(settings.secret_file).expanduser() if settings.secret_file else None
    signer = signer_for(secret_file, insecure=insecure, env=dict(env), configured=configured)
    if signer.insecure:
        log.warning(
            "fleet_insecure",
            detail=f"no {SECRET_ENV}: tasks are unsigned, and anyone who can write to Redis "
            "can order kills on every worker's hosts",
        )
    return FleetSetup(redis_url=url, prefix=settings.key_prefix, signer=signer)


@dataclass
class RedisPorts:
    client: redis.Redis
    store: RedisMissionStore
    queue: RqTaskQueue
    bus: RedisStreamEventBus
    leases: RedisLeases
    heartbeats: RedisHeartbeats

    def close(self) -> None:
        self.client.close()


def open_redis_ports(setup: FleetSetup, clock: Clock | None = None) -> RedisPorts:
    """Connect (a clear error naming the URL, without its password, if Redis is down)."""
    from infra.redis.bus import RedisStreamEventBus
    from infra.redis.connection import connect, ping_or_raise
    from infra.redis.heartbeat import RedisHeartbeats
    from infra.redis.lease import RedisLeases
    from infra.redis.queue import RqTaskQueue
    from infra.redis.store import RedisMissionStore

    # A down Redis at start is an operator's mistake: say so at once, without the retries
    # (seconds of backoff) that the long-lived client uses to ride out a restart.
    probe = connect(setup.redis_url, retries=0, socket_connect_timeout=3.0)
    try:
        ping_or_raise(probe, setup.redis_url)
    finally:
        probe.close()
    client = connect(setup.redis_url)
    clock = clock or SystemClock()
    return RedisPorts(
        client=client,
        store=RedisMissionStore(client, prefix=setup.prefix),
        queue=RqTaskQueue(client, signer=setup.signer, clock=clock, prefix=setup.prefix),
        bus=RedisStreamEventBus(client, prefix=setup.prefix),
        leases=RedisLeases(client, prefix=setup.prefix),
        heartbeats=RedisHeartbeats(client, prefix=setup.prefix),
    )
