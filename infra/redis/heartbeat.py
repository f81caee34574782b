"""Liveness: our own keys with a TTL for engines, RQ's worker hash for workers.

Engines beat once per turn; ``reaper health --engine NAME`` (the container healthcheck) reads
the key, which disappears by itself when the engine stops beating. Workers need no key of
ours: RQ keeps ``rq:worker:<name>`` with its ``last_heartbeat``, and :meth:`worker_beat`
judges whether that worker is keeping to its heartbeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infra.redis.connection import as_text

if TYPE_CHECKING:
    import redis

RQ_WORKER_PREFIX = "rq:worker:"  # rq.Worker.redis_worker_namespace_prefix
# At every heartbeat RQ sets the worker key to expire after the time until its next
# heartbeat plus this margin (BaseWorker.heartbeat and register_birth: worker_ttl + 60 while
# idle, beating every worker_ttl - 15 s; SimpleWorker.get_heartbeat_ttl: job timeout + 60
# when a job starts). So the key keeps existing for this long after a missed heartbeat.
# (`reaper worker` holds every beat, its own and RQ's, to a 10 s promise:
# overseer/fleet/worker_names.py.)
RQ_HEARTBEAT_MARGIN_SECONDS = 60.0
# How late a worker's heartbeat may be before ``reaper health`` calls it dead: a busy Redis
# or a job finishing at its deadline may delay a beat a little.
WORKER_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """What RQ records about a worker's heartbeat, and whether it is keeping to it."""

    name: str
    last_heartbeat: str | None  # as RQ wrote it (ISO 8601, UTC)
    stopped: bool  # RQ registered its death: it exited cleanly
    expires_in: float | None  # seconds until RQ drops the key; None if it has no expiry

    @property
    def overdue_by(self) -> float:
        """Seconds past the heartbeat the worker promised last (<= 0: not overdue).

        The promise is the key's expiry minus RQ's margin. Reading it from the key's TTL,
        rather than comparing ``last_heartbeat`` with this machine's clock, needs no clock
        agreement between the worker's host and this one.
        """
        if self.expires_in is None:  # RQ's beats always set one: nobody keeps this key
            return float("inf")
        return RQ_HEARTBEAT_MARGIN_SECONDS - self.expires_in

    @property
    def alive(self) -> bool:
        if self.stopped or self.last_heartbeat is None:
            return False
        return self.overdue_by <= WORKER_GRACE_SECONDS


class RedisHeartbeats:
    def __init__(self, client: redis.Redis, *, prefix: str = "reaper") -> None:
        self.client = client
        self.prefix = prefix

    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:alive:{kind}:{name}"

    def beat(self, kind: str, name: str, ttl: float, info: dict[str, Any]) -> None:
        self.client.set(self.key(kind, name), json.dumps(info), px=max(1, int(ttl * 1000)))

    def last(self, kind: str, name: str) -> dict[str, Any] | None:
        raw = self.client.get(self.key(kind, name))
        if raw is None:
            return None
        info = json.loads(raw)
        return info if isinstance(info, dict) else None

    def forget(self, kind: str, name: str) -> None:
        self.client.delete(self.key(kind, name))

    def worker_beat(self, name: str) -> WorkerBeat | None:
        """The RQ worker of that name's heartbeat record; None if RQ knows no such worker."""
        key = RQ_WORKER_PREFIX + name
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(key, ["last_heartbeat", "death"])
        pipe.pttl(key)
        (last, death), pttl = pipe.execute()
        if pttl == -2:  # no such key
            return None
        return WorkerBeat(
            name=name,
            last_heartbeat=as_text(last) if last is not None else None,
            stopped=bool(death),
            expires_in=None if pttl < 0 else pttl / 1000,
        )
