"""Thread-safe in-memory EventBus with the at-least-once semantics of a Redis consumer group."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from infra.codec import decode, encode
from reaper_engine.clock import utcnow
from reaper_engine.errors import MessageDecodeError
from reaper_engine.log import get_logger
from reaper_engine.models import ResultEvent
from reaper_engine.ports import DeadLetter, Delivery, EventBus, Interrupts

log = get_logger(__name__)


@dataclass
class _Pending:
    delivery: Delivery
    payload: str
    delivered_at: float


@dataclass
class _Stream:
    entries: list[tuple[str, str]] = field(default_factory=list)  # (entry id, payload)
    cursor: int = 0  # index of the first entry never delivered
    pending: dict[str, _Pending] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)


class InMemoryEventBus(EventBus):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._streams: dict[str, _Stream] = {}
        self._ids = itertools.count(1)
        self._interrupts = Interrupts()  # guarded by _cond; see interrupt()

    def _stream(self, mission_id: str) -> _Stream:
        return self._streams.setdefault(mission_id, _Stream())

    def publish(self, event: ResultEvent) -> None:
        self.push_raw(event.mission_id, encode(event))

    def push_raw(self, mission_id: str, payload: str) -> None:
        """Append an arbitrary payload, as a foreign writer could (tests of dead-lettering)."""
        with self._cond:
            self._stream(mission_id).entries.append((f"{next(self._ids)}-0", payload))
            self._cond.notify_all()

    def read(self, mission_id: str, *, timeout: float, max_count: int = 100) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._cond:
            generation = self._interrupts.generation
            if self._interrupts.pending():
                deadline = 0.0  # interrupted since this thread's last call: do not wait
            stream = self._stream(mission_id)
            try:
                while True:
                    out = self._take_new(stream, mission_id, max_count)
                    remaining = deadline - time.monotonic()
                    if out or remaining <= 0 or generation != self._interrupts.generation:
                        return out
                    self._cond.wait(remaining)
            finally:
                self._interrupts.observed()

    def _take_new(self, stream: _Stream, mission_id: str, max_count: int) -> list[Delivery]:
        """Hand out up to ``max_count`` entries never delivered; dead-letter undecodable ones."""
        out: list[Delivery] = []
        while stream.cursor < len(stream.entries) and len(out) < max_count:
            entry_id, payload = stream.entries[stream.cursor]
            stream.cursor += 1
            try:
                event = decode(ResultEvent, payload)
            except MessageDecodeError as err:
                self._record_dead(stream, mission_id, payload, str(err))
                continue
            delivery = Delivery(entry_id, mission_id, event, deliveries=1)
            stream.pending[entry_id] = _Pending(delivery, payload, time.monotonic())
            out.append(delivery)
        return out

    def ack(self, mission_id: str, delivery_ids: Sequence[str]) -> None:
        with self._cond:
            stream = self._stream(mission_id)
            for delivery_id in delivery_ids:
                stream.pending.pop(delivery_id, None)

    def claim_stale(
        self, mission_id: str, *, min_idle_seconds: float, max_count: int = 100
    ) -> list[Delivery]:
        now = time.monotonic()
        out: list[Delivery] = []
        with self._cond:
            stream = self._stream(mission_id)
            for entry_id, pending in list(stream.pending.items()):
                if len(out) >= max_count:
                    break
                if now - pending.delivered_at < min_idle_seconds:
                    continue
                old = pending.delivery
                again = Delivery(entry_id, mission_id, old.event, deliveries=old.deliveries + 1)
                stream.pending[entry_id] = _Pending(again, pending.payload, now)
                out.append(again)
        return out

    def pending_count(self, mission_id: str) -> int:
        with self._cond:
            return len(self._stream(mission_id).pending)

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        with self._cond:
            stream = self._stream(delivery.mission_id)
            pending = stream.pending.pop(delivery.delivery_id, None)
            payload = pending.payload if pending else encode(delivery.event)
            self._record_dead(stream, delivery.mission_id, payload, error)

    def _record_dead(self, stream: _Stream, mission_id: str, payload: str, error: str) -> None:
        stream.dead.append(DeadLetter(source=mission_id, payload=payload, error=error, at=utcnow()))
        log.warning("event_dead_lettered", mission_id=mission_id, error=error)

    def dead_letters(self, mission_id: str) -> list[DeadLetter]:
        with self._cond:
            return list(self._stream(mission_id).dead)

    def interrupt(self) -> None:
        """Sticky per thread (see reaper_engine.ports): wakes every blocked read, and makes
        the next read of every other thread return without waiting."""
        with self._cond:
            self._interrupts.fire()
            self._cond.notify_all()
