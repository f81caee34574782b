"""EventBus on Redis Streams: one stream per mission, one consumer group of engines.

Keys (``RedisKeys``): ``<prefix>:events:<mission_id>`` (field ``event`` = ResultEvent JSON,
trimmed to about ``maxlen`` entries), ``<prefix>:events:dead`` (dead letters of every
mission) and ``<prefix>:wake:bus:<instance>`` (see *Waiting* below). The group ``engines`` is
created lazily from id 0, so events published before any engine read are not lost, and
again whenever Redis says NOGROUP (the stream was deleted).

Waiting. ``read`` takes new entries with a non-blocking ``XREADGROUP``; when there are none
it waits with ``XREAD BLOCK`` on two streams: the mission's, from the group's
last-delivered id (so it returns as soon as there is anything the group has not handed out,
however late the XREAD is sent), and this instance's wake stream, from the id of the
interrupt generation the read started in. ``interrupt()`` bumps the generation and appends
an entry with that generation as its id, which wakes every read of this instance, whether it
was already blocked or was about to block. Then the read tries XREADGROUP again. An
interrupt is also sticky per thread (``reaper_engine.ports.Interrupts``): a thread that was
not reading when it fired has its next read take only what is there, without blocking.

Why not ``XREADGROUP ... BLOCK`` plus ``CLIENT UNBLOCK``: an unblock sent just before the
reader's command reaches the server is lost (the read then sleeps its whole timeout);
CLIENT UNBLOCK needs the ``@admin`` ACL category an engine should not hold; and fakeredis
(2.40) returns at once from ``XREADGROUP ... COUNT n BLOCK ms`` on an empty stream, so the
contract suite could not check the blocking path there.
"""

# redis and rq are imported where they are used: nothing may import them at module level
# (tests/unit/test_layout.py), so that only commands that use Redis pay for them.
# ruff: noqa: PLC0415

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from infra.codec import decode
from infra.redis.connection import as_text, blocking_slice
from infra.redis.keys import DEFAULT_PREFIX, RedisKeys
from reaper_engine.clock import Clock, SystemClock, utcnow
from reaper_engine.errors import MessageDecodeError
from reaper_engine.models import ResultEvent
from reaper_engine.ports import DeadLetter, Delivery, EventBus, Interrupts

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)

GROUP = "engines"
EVENT_FIELD = b"event"
DEFAULT_MAXLEN = 100_000
DEFAULT_DEAD_MAXLEN = 10_000
_WAKE_MAXLEN = 16
_WAKE_TTL = 24 * 3600  # a wake stream outlives its bus by a day at most
_AUTOCLAIM_ROUNDS = 10  # XAUTOCLAIM scans a bounded slice of the PEL per call


def consumer_name() -> str:
    """hostname-pid-random: unique per bus instance, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisStreamEventBus(EventBus):
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = DEFAULT_MAXLEN,
        dead_maxlen: int = DEFAULT_DEAD_MAXLEN,
        consumer: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._keys = RedisKeys(prefix)
        self._maxlen = maxlen
        self._dead_maxlen = dead_maxlen
        self._clock: Clock = clock or SystemClock()
        self.consumer = consumer or consumer_name()
        self._wake_key = self._keys.bus_wake(secrets.token_hex(8))
        self._slice = blocking_slice(client)
        self._lock = threading.Lock()
        self._interrupts = Interrupts()  # guarded by _lock
        self._grouped: set[str] = set()  # stream keys whose group this instance has ensured

    # -- keys and groups --------------------------------------------------------------------

    def stream_key(self, mission_id: str) -> str:
        return self._keys.events(mission_id)

    def _ensure_group(self, key: str, *, force: bool = False) -> None:
        from redis.exceptions import ResponseError

        if key in self._grouped and not force:
            return
        try:
            self._client.xgroup_create(key, GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._grouped.add(key)

    # -- EventBus ---------------------------------------------------------------------------

    def publish(self, event: ResultEvent) -> None:
        self._client.xadd(
            self.stream_key(event.mission_id),
            {EVENT_FIELD: event.model_dump_json()},
            maxlen=self._maxlen,
            approximate=True,
        )

    def read(self, mission_id: str, *, timeout: float, max_count: int = 100) -> list[Delivery]:
        with self._lock:
            generation = self._interrupts.generation
            if self._interrupts.pending():
                timeout = 0.0  # interrupted since this thread's last read: do not wait
        try:
            return self._read(mission_id, generation, timeout, max_count)
        finally:
            with self._lock:
                self._interrupts.observed()

    def _read(
        self, mission_id: str, generation: int, timeout: float, max_count: int
    ) -> list[Delivery]:
        from redis.exceptions import ResponseError

        deadline = time.monotonic() + max(timeout, 0.0)
        key = self.stream_key(mission_id)
        self._ensure_group(key)
        while True:
            will_wait = deadline > time.monotonic()
            pipe = self._client.pipeline(transaction=False)
            pipe.xreadgroup(GROUP, self.consumer, {key: ">"}, count=max(1, max_count))
            if will_wait:
                # Taken after the XREADGROUP: anything past this id is still undelivered.
                pipe.xinfo_groups(key)
            replies = pipe.execute(raise_on_error=False)
            taken = replies[0]
            if isinstance(taken, ResponseError):
                if "NOGROUP" not in str(taken):
                    raise taken
                self._ensure_group(key, force=True)  # the stream was deleted under us
                continue
            entries = _entries_of(taken)
            if entries:
                out = self._deliveries(mission_id, key, entries)
                if out:
                    return out
                continue  # only malformed entries: they are dead now; look again at once
            remaining = deadline - time.monotonic()
            if remaining <= 0 or generation != self._interrupts.generation:
                return []
            last_delivered = _last_delivered(replies[1]) if will_wait else None
            if last_delivered is None:  # the stream went away between the two commands
                self._ensure_group(key, force=True)
                continue
            self._wait(key, last_delivered, generation, remaining)

    def _wait(self, key: str, last_delivered: bytes, generation: int, remaining: float) -> None:
        """Block until the mission stream has an entry past ``last_delivered``, an interrupt
        after ``generation`` happens, or ``remaining`` seconds pass (at most one slice)."""
        wait = remaining if self._slice is None else min(remaining, self._slice)
        block_ms = max(1, math.ceil(wait * 1000))  # BLOCK 0 would mean forever
        self._client.xread(
            {key: last_delivered, self._wake_key: _wake_id(generation)},
            count=1,
            block=block_ms,
        )

    def _deliveries(
        self,
        mission_id: str,
        key: str,
        entries: Sequence[tuple[bytes, Mapping[bytes, bytes] | None]],
    ) -> list[Delivery]:
        """Decode entries just handed to us; dead-letter (and ack) those that do not decode."""
        out: list[Delivery] = []
        dead: list[tuple[bytes, str, str]] = []
        for entry_id, fields in entries:
            raw = (fields or {}).get(EVENT_FIELD)
            if raw is None:
                dead.append((entry_id, _describe(fields), f"entry has no '{EVENT_FIELD.decode()}'"))
                continue
            try:
                event = decode(ResultEvent, raw)
            except MessageDecodeError as err:
                dead.append((entry_id, raw.decode("utf-8", "replace"), str(err)))
                continue
            out.append(Delivery(entry_id.decode(), mission_id, event, deliveries=1))
        if dead:
            pipe = self._client.pipeline(transaction=True)
            for entry_id, payload, error in dead:
                self._record_dead(pipe, mission_id, key, entry_id, payload, error)
            pipe.execute()
        return out

    def ack(self, mission_id: str, delivery_ids: Sequence[str]) -> None:
        if delivery_ids:
            self._client.xack(self.stream_key(mission_id), GROUP, *delivery_ids)

    def claim_stale(
        self, mission_id: str, *, min_idle_seconds: float, max_count: int = 100
    ) -> list[Delivery]:
        from redis.exceptions import ResponseError

        key = self.stream_key(mission_id)
        if max_count < 1:
            return []
        min_idle_ms = max(0, math.floor(min_idle_seconds * 1000))
        claimed: list[tuple[bytes, dict[bytes, bytes] | None]] = []
        deleted = 0  # Redis >= 7 reports entries trimmed away while pending apart
        cursor: bytes | str = "0-0"
        try:
            for _ in range(_AUTOCLAIM_ROUNDS):
                reply = self._client.xautoclaim(
                    key,
                    GROUP,
                    self.consumer,
                    min_idle_ms,
                    start_id=cursor,
                    count=max_count - len(claimed),
                )
                cursor = reply[0]
                claimed.extend(reply[1])
                deleted += len(reply[2]) if len(reply) > 2 else 0
                if len(claimed) >= max_count or cursor in (b"0-0", "0-0"):
                    break
        except ResponseError as err:
            if "NOGROUP" in str(err):
                return []
            raise
        live = [(entry_id, fields) for entry_id, fields in claimed if fields is not None]
        gone = [entry_id for entry_id, fields in claimed if fields is None]
        if gone:  # trimmed away while pending (Redis 6.2 still lists them): nothing to redo
            self._client.xack(key, GROUP, *gone)
        if gone or deleted:
            # Results lost to MAXLEN before an engine applied them: their tasks time out and
            # are retried. Say so, loudly.
            log.warning("results_trimmed_unread", mission_id=mission_id, count=len(gone) + deleted)
        if not live:
            return []
        counts = self._delivery_counts(key, [entry_id for entry_id, _ in live])
        out: list[Delivery] = []
        for delivery in self._deliveries(mission_id, key, live):
            again = counts.get(delivery.delivery_id, 2)
            out.append(Delivery(delivery.delivery_id, mission_id, delivery.event, deliveries=again))
        return out

    def _delivery_counts(self, key: str, entry_ids: list[bytes]) -> dict[str, int]:
        """Redis's own delivery counter of each entry (XAUTOCLAIM has just bumped it)."""
        pipe = self._client.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xpending_range(key, GROUP, min=entry_id, max=entry_id, count=1)
        counts: dict[str, int] = {}
        for rows in pipe.execute():
            for row in rows:
                counts[as_text(row["message_id"])] = int(row["times_delivered"])
        return counts

    def pending_count(self, mission_id: str) -> int:
        from redis.exceptions import ResponseError

        try:
            summary = self._client.xpending(self.stream_key(mission_id), GROUP)
        except ResponseError as err:
            if "NOGROUP" in str(err):
                return 0
            raise
        return int(summary["pending"])

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        key = self.stream_key(delivery.mission_id)
        entry_id = delivery.delivery_id
        # Keep the bytes as they were published, not a re-serialisation of what we parsed.
        found = self._client.xrange(key, min=entry_id, max=entry_id, count=1) or []
        fields = found[0][1] if found else None
        raw = fields.get(EVENT_FIELD) if fields else None
        payload = as_text(raw) if raw is not None else delivery.event.model_dump_json()
        pipe = self._client.pipeline(transaction=True)
        self._record_dead(pipe, delivery.mission_id, key, entry_id.encode(), payload, error)
        pipe.execute()

    def _record_dead(
        self,
        pipe: redis.client.Pipeline,
        mission_id: str,
        key: str,
        entry_id: bytes,
        payload: str,
        error: str,
    ) -> None:
        """Queue on ``pipe``: the dead letter, and the ack that takes the entry off the PEL."""
        pipe.xadd(
            self._keys.dead_events(),
            {
                b"mission_id": mission_id,
                b"entry_id": entry_id,
                b"payload": payload,
                b"error": error,
                b"at": self._clock.now().isoformat(),
            },
            maxlen=self._dead_maxlen,
            approximate=True,
        )
        pipe.xack(key, GROUP, entry_id)
        log.warning(
            "event_dead_lettered",
            mission_id=mission_id,
            entry_id=as_text(entry_id),
            error=error,
        )

    def dead_letters(self, mission_id: str) -> list[DeadLetter]:
        wanted = mission_id.encode()
        source = self.stream_key(mission_id)
        out: list[DeadLetter] = []
        for _, fields in self._client.xrange(self._keys.dead_events()) or []:
            if not fields or fields.get(b"mission_id") != wanted:
                continue
            out.append(
                DeadLetter(
                    source=source,
                    payload=as_text(fields.get(b"payload")),
                    error=as_text(fields.get(b"error")),
                    at=_parse_at(fields.get(b"at")),
                )
            )
        return out

    def interrupt(self) -> None:
        """Wake every ``read`` of this instance now blocked or about to block, and make the
        next read of every other thread return without blocking."""
        from redis.exceptions import RedisError

        with self._lock:
            generation = self._interrupts.fire()
        try:
            pipe = self._client.pipeline(transaction=True)
            # The id carries the generation: a read started before it waits from a lower id.
            pipe.xadd(
                self._wake_key,
                {b"generation": str(generation)},
                id=_wake_id(generation),
                maxlen=_WAKE_MAXLEN,
            )
            pipe.expire(self._wake_key, _WAKE_TTL)
            pipe.execute()
        except RedisError as err:
            # A read blocked on a broken connection fails by itself; nothing more to wake.
            log.warning("bus_interrupt_failed", error=str(err))


def _wake_id(generation: int) -> str:
    """The wake entry of ``generation``; a read of that generation waits for ids above it."""
    return f"{generation}-1"


def _entries_of(reply: Any) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
    """The entries of a one-stream XREADGROUP reply (RESP2, as ``connect`` sets up)."""
    if not reply:
        return []
    return [(entry_id, fields) for _, entries in reply for entry_id, fields in entries]


def _last_delivered(groups: Any) -> bytes | None:
    if not isinstance(groups, list):
        return None
    for group in groups:
        if as_text(group.get("name", b"")) == GROUP:
            value = group.get("last-delivered-id")
            return value if isinstance(value, bytes) else str(value).encode()
    return None


def _describe(fields: Mapping[bytes, bytes] | None) -> str:
    if not fields:
        return ""
    return json.dumps({as_text(k): as_text(v) for k, v in fields.items()})


def _parse_at(value: object) -> datetime:
    try:
        return datetime.fromisoformat(as_text(value))
    except ValueError:
        return utcnow()
