"""MissionStore on Redis: one hash per mission, in parts; compare-and-set saves in one Lua call.

Keys (``RedisKeys``):

* ``<prefix>:mission:<id>``          hash: ``version`` (int), ``rev`` (a random revision per
                                     save), ``head`` (the MissionState JSON without its hosts
                                     and tasks), ``hosts`` (the host ids in order: a hash keeps
                                     none), then one field per part: ``h:<host id>`` (HostState
                                     JSON), ``p:<task id>`` (PendingTask), ``d:<task id>``
                                     (TaskRecord of a completed task);
* ``<prefix>:missions``              sorted set of ids scored by creation order (``list_ids``);
* ``<prefix>:missions:seq``          the counter behind those scores;
* ``<prefix>:mission-summaries``     hash id -> MissionSummary JSON, for ``summaries()``.

A save writes the head and only the parts that changed since this store instance last saved
the mission (infra/state_parts.py): a batch of results in a 1000-host mission rewrites what
the batch touched, not the whole multi-megabyte state. One key per mission: a load is one
HGETALL, never half a save, and nothing (an eviction, a rename) can split a mission.

The version lives beside the head so the scripts compare it without parsing JSON. Each
script writes the mission and its summary together, so dashboards never see a summary of a
state that was not saved. The index is scored by a counter, not by ``created_at``: missions
created in the same instant (a ManualClock, a fast loop) keep their creation order.

Missions saved before parts (one ``doc`` field holding the whole state) still load; their
next save rewrites them in parts.

A summary that does not decode (a corrupt entry, or one a newer Reaper wrote) never hides
the others: ``summaries()`` leaves it out and logs it, ``summary_rows()`` reports it as an
:class:`UnreadableSummary` in its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from infra.codec import decode, encode
from infra.redis.connection import as_text
from infra.redis.keys import DEFAULT_PREFIX, RedisKeys
from infra.state_parts import PartTracker, StateDelta, assemble, head_json, new_revision
from reaper_engine.errors import ConcurrentUpdateError, MessageDecodeError
from reaper_engine.models import MissionState, MissionSummary
from reaper_engine.ports import MissionStore

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)

# Both scripts take ARGV: mission id, new version, head, summary, expected version (save
# only), the new revision, then the StateDelta: the revision it is a delta of ('' when it
# is written in full), the host ids in order (a JSON list, written only in full), the number
# of field/document pairs to write and of fields to delete, the pairs, the fields.
_WRITE_PARTS = """
local function write_parts()
  if ARGV[7] == '' then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'hosts', ARGV[8])
  end
  local at = 11
  local function each(n, width, command)
    local step = 500 * width  -- unpack() is bounded by Lua's C stack
    local last = at + n * width - 1
    while at <= last do
      local upto = math.min(at + step - 1, last)
      redis.call(command, KEYS[1], unpack(ARGV, at, upto))
      at = upto + 1
    end
  end
  each(tonumber(ARGV[9]), 2, 'HSET')
  each(tonumber(ARGV[10]), 1, 'HDEL')
  redis.call('HSET', KEYS[1], 'version', ARGV[2], 'head', ARGV[3], 'rev', ARGV[6])
end
"""

# KEYS: mission, index, seq, summaries.
_CREATE = (
    _WRITE_PARTS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
write_parts()
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
return 1
"""
)

# KEYS: mission, summaries. Returns {0, new} when saved, {1, 0} when the mission does not
# exist, {2, current} on a version mismatch and {3, current} when a delta's revision is not
# the stored one (the same version, other parts: a lost write). A key of another type fails
# the first HGET, before anything is written.
_SAVE = (
    _WRITE_PARTS
    + """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then
  return {1, 0}
end
if current ~= ARGV[5] then
  return {2, tonumber(current)}
end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'rev') ~= ARGV[7] then
  return {3, tonumber(current)}
end
write_parts()
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
return {0, tonumber(ARGV[2])}
"""
)

# Field name prefixes of the parts, by StateDelta map.
_HOST, _PENDING, _DONE = "h:", "p:", "d:"

_SAVED, _MISSING, _CONFLICT, _OTHER_REVISION = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class UnreadableSummary:
    """A mission whose summary could not be decoded, and why."""

    mission_id: str
    error: str


class RedisMissionStore(MissionStore):
    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        self._parts = PartTracker()
        # Scripts run by SHA and are re-sent by redis-py after a restart flushed the cache.
        self._create = client.register_script(_CREATE)
        self._save = client.register_script(_SAVE)

    def create(self, state: MissionState) -> MissionState:
        saved = state.model_copy(update={"version": 1})
        mission_id = state.mission_id
        revision = new_revision()
        delta = self._parts.delta(saved, head_json(saved), full=True)
        created = self._create(
            keys=[
                self._keys.mission(mission_id),
                self._keys.missions(),
                self._keys.mission_seq(),
                self._keys.summaries(),
            ],
            args=[
                mission_id,
                1,
                delta.head,
                encode(MissionSummary.of(saved)),
                0,
                revision,
                *_args(delta),
            ],
        )
        if int(created) != 1:
            raise ValueError(f"mission '{mission_id}' already exists")
        self._parts.saved(saved, revision)
        return saved

    def load(self, mission_id: str) -> MissionState | None:
        fields: dict[bytes, bytes] = self._client.hgetall(self._keys.mission(mission_id))  # type: ignore[assignment]
        if b"head" in fields:
            hosts: dict[str, bytes] = {}
            pending: dict[str, bytes] = {}
            done: dict[str, bytes] = {}
            by_prefix = {_HOST.encode(): hosts, _PENDING.encode(): pending, _DONE.encode(): done}
            for name, value in fields.items():
                part = by_prefix.get(name[:2])
                if part is not None:
                    part[name[2:].decode()] = value
            state = assemble(
                fields[b"head"],
                hosts,
                pending,
                done,
                host_order=_host_order(fields.get(b"hosts")),
            )
            self._parts.loaded(state, as_text(fields.get(b"rev", b"")))
            return state
        if b"doc" in fields:
            self._parts.forget(mission_id)  # its next save rewrites it in parts
            return decode(MissionState, fields[b"doc"])
        return None

    def version(self, mission_id: str) -> int | None:
        version = self._client.hget(self._keys.mission(mission_id), "version")
        return int(version) if version is not None else None

    def save(self, state: MissionState) -> MissionState:
        saved = state.model_copy(update={"version": state.version + 1})
        mission_id = state.mission_id
        revision = new_revision()
        delta = self._parts.delta(state, head_json(saved))
        code, version = self._save(
            keys=[self._keys.mission(mission_id), self._keys.summaries()],
            args=[
                mission_id,
                saved.version,
                delta.head,
                encode(MissionSummary.of(saved)),
                state.version,
                revision,
                *_args(delta),
            ],
        )
        if int(code) == _MISSING:
            raise ConcurrentUpdateError(f"mission '{mission_id}' does not exist")
        if int(code) == _CONFLICT:
            raise ConcurrentUpdateError(
                f"mission '{mission_id}' is at version {int(version)}, "
                f"the copy being saved was loaded at {state.version}"
            )
        if int(code) == _OTHER_REVISION:
            self._parts.forget(mission_id)
            raise ConcurrentUpdateError(
                f"mission '{mission_id}' at version {int(version)} is not the copy this "
                "store saw (Redis lost a write?): reload it"
            )
        self._parts.saved(saved, revision)
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


def _args(delta: StateDelta) -> list[str | int]:
    """The scripts' arguments for ``delta``, from ARGV[7] on."""
    pairs: list[str | int] = []
    for prefix, docs in ((_HOST, delta.hosts), (_PENDING, delta.pending), (_DONE, delta.done)):
        for key, doc in docs.items():
            pairs += (prefix + key, doc)
    gone = [_PENDING + k for k in delta.pending_gone] + [_DONE + k for k in delta.done_gone]
    return [
        delta.base or "",
        json.dumps(delta.host_order) if delta.full else "",
        len(pairs) // 2,
        len(gone),
        *pairs,
        *gone,
    ]


def _host_order(raw: bytes | None) -> list[str]:
    """The host ids in their inventory order; a defect only costs the order (by id)."""
    try:
        order = json.loads(raw) if raw is not None else []
    except ValueError:
        return []
    return [h for h in order if isinstance(h, str)] if isinstance(order, list) else []
