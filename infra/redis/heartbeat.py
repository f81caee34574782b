"""Liveness keys with a TTL: a process that stops beating disappears by itself.

Engines beat once per turn; ``reaper health --engine NAME`` (the container healthcheck) reads
the key. Workers need no key of ours: RQ keeps ``rq:worker:<name>`` alive the same way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis


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
