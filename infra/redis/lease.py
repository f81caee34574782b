"""Mission leases on Redis: ``SET NX PX`` to take, compare-and-extend / compare-and-delete
scripts to renew and release, so an engine can only ever extend or drop its own lease."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reaper_engine.ports import Leases

if TYPE_CHECKING:
    import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLeases(Leases):
    def __init__(self, client: redis.Redis, *, prefix: str = "reaper") -> None:
        self.client = client
        self.prefix = prefix
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def key(self, mission_id: str) -> str:
        return f"{self.prefix}:lease:{mission_id}"

    def acquire(self, mission_id: str, owner: str, ttl: float) -> bool:
        key, ms = self.key(mission_id), _ms(ttl)
        if self.client.set(key, owner, nx=True, px=ms):
            return True
        return self.renew(mission_id, owner, ttl)  # already ours (a restart of the same id)

    def renew(self, mission_id: str, owner: str, ttl: float) -> bool:
        return bool(self._renew(keys=[self.key(mission_id)], args=[owner, _ms(ttl)]))

    def release(self, mission_id: str, owner: str) -> None:
        self._release(keys=[self.key(mission_id)], args=[owner])

    def holder(self, mission_id: str) -> str | None:
        value = self.client.get(self.key(mission_id))
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
