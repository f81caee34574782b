"""MissionStore on Redis: one hash per mission, compare-and-set saves in one Lua round trip.

Keys (``RedisKeys``):

* ``<prefix>:mission:<id>``       hash ``version`` (int) and ``doc`` (the MissionState JSON);
* ``<prefix>:missions``           sorted set of ids scored by creation order (``list_ids``);
* ``<prefix>:missions:seq``       the counter behind those scores;
* ``<prefix>:mission-summaries``  hash id -> MissionSummary JSON, for ``summaries()``.

The version lives beside the document so the scripts compare it without parsing JSON. Each
script writes the mission and its summary together, so dashboards never see a summary of a
state that was not saved. The index is scored by a counter, not by ``created_at``: missions
created in the same instant (a ManualClock, a fast loop) keep their creation order.

A summary that does not decode (a corrupt entry, or one a newer Reaper wrote) never hides
the others: ``summaries()`` leaves it out and logs it, ``summary_rows()`` reports it as an
:class:`UnreadableSummary` in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from infra.codec import decode, encode
from infra.redis.connection import as_text
from infra.redis.keys import DEFAULT_PREFIX, RedisKeys
from reaper_engine.errors import ConcurrentUpdateError, MessageDecodeError
from reaper_engine.models import MissionState, MissionSummary
from reaper_engine.ports import MissionStore

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)

# KEYS: mission, index, seq, summaries. ARGV: mission id, doc, summary.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'version', '1', 'doc', ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
return 1
"""

# KEYS: mission, summaries. ARGV: mission id, expected version, new version, doc, summary.
# Returns {0, new} when saved, {1, 0} when the mission does not exist, {2, current} on a
# version mismatch.
_SAVE = """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then
  return {1, 0}
end
if current ~= ARGV[2] then
  return {2, tonumber(current)}
end
redis.call('HSET', KEYS[1], 'version', ARGV[3], 'doc', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
return {0, tonumber(ARGV[3])}
"""

_SAVED, _MISSING, _CONFLICT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class UnreadableSummary:
    """A mission whose summary could not be decoded, and why."""

    mission_id: str
    error: str


class RedisMissionStore(MissionStore):
    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        # Scripts run by SHA and are re-sent by redis-py after a restart flushed the cache.
        self._create = client.register_script(_CREATE)
        self._save = client.register_script(_SAVE)

    def create(self, state: MissionState) -> MissionState:
        saved = state.model_copy(update={"version": 1})
        mission_id = state.mission_id
        created = self._create(
            keys=[
                self._keys.mission(mission_id),
                self._keys.missions(),
                self._keys.mission_seq(),
                self._keys.summaries(),
            ],
            args=[mission_id, encode(saved), encode(MissionSummary.of(saved))],
        )
        if int(created) != 1:
            raise ValueError(f"mission '{mission_id}' already exists")
        return saved

    def load(self, mission_id: str) -> MissionState | None:
        doc = self._client.hget(self._keys.mission(mission_id), "doc")
        return decode(MissionState, doc) if doc is not None else None

    def version(self, mission_id: str) -> int | None:
        version = self._client.hget(self._keys.mission(mission_id), "version")
        return int(version) if version is not None else None

    def save(self, state: MissionState) -> MissionState:
        saved = state.model_copy(update={"version": state.version + 1})
        mission_id = state.mission_id
        code, version = self._save(
            keys=[self._keys.mission(mission_id), self._keys.summaries()],
            args=[
                mission_id,
                str(state.version),
                str(saved.version),
                encode(saved),
                encode(MissionSummary.of(saved)),
            ],
        )
        if int(code) == _MISSING:
            raise ConcurrentUpdateError(f"mission '{mission_id}' does not exist")
        if int(code) == _CONFLICT:
            raise ConcurrentUpdateError(
                f"mission '{mission_id}' is at version {int(version)}, "
                f"the copy being saved was loaded at {state.version}"
            )
        return saved

    def list_ids(self) -> list[str]:
        return [as_text(m) for m in self._client.zrange(self._keys.missions(), 0, -1)]

    def summaries(self) -> list[MissionSummary]:
        """Every readable mission's summary, oldest first, in one round trip (no
        MissionState loaded); unreadable ones are logged and left out."""
        return [row for row in self.summary_rows() if isinstance(row, MissionSummary)]

    def summary_rows(self) -> list[MissionSummary | UnreadableSummary]:
        """Every mission's summary, oldest first; an undecodable one as UnreadableSummary."""
        pipe = self._client.pipeline(transaction=True)
        pipe.zrange(self._keys.missions(), 0, -1)
        pipe.hgetall(self._keys.summaries())
        ids, docs = pipe.execute()
        out: list[MissionSummary | UnreadableSummary] = []
        for raw_id in ids:
            doc = docs.get(raw_id)
            if doc is None:
                continue
            try:
                out.append(decode(MissionSummary, doc))
            except MessageDecodeError as err:
                mission_id = as_text(raw_id)
                log.warning("mission_summary_unreadable", mission_id=mission_id, error=str(err))
                out.append(UnreadableSummary(mission_id, str(err)))
        return out
