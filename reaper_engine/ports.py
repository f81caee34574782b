"""The three ports fleet mode runs on. Adapters live in ``infra`` (in-memory, Redis).

Semantics every adapter must honour (the contract suite in tests/contract checks them):

TaskQueue
  * one FIFO per agent type; ``consume`` blocks up to ``timeout`` and wakes on arrival;
  * a task id already queued is not queued twice (``publish`` returns False);
  * ``discard`` removes queued tasks that no agent has taken yet (used by cancel);
  * a payload that does not decode is dead-lettered, never handed out, never fatal.

EventBus (at-least-once, per-mission streams, one consumer group)
  * ``read`` hands out new events, each to one reader, and keeps them pending until ``ack``;
  * ``claim_stale`` re-delivers pending events idle for ``min_idle_seconds`` (a dead reader's);
  * undecodable entries and poison events go to a dead-letter list with the error.

MissionStore (optimistic concurrency)
  * ``create`` refuses an existing id; ``save`` refuses a copy whose ``version`` is not the
    stored one (ConcurrentUpdateError) and returns the saved copy with ``version + 1``.

Leases (mission ownership across engine processes)
  * ``acquire`` succeeds for one owner at a time (or again for the holder), until the TTL lapses;
  * ``renew`` extends only the holder's lease and fails once it has lapsed or been taken.

Stopping a blocking loop (``TaskQueue.interrupt``, ``EventBus.interrupt``)
  * An interrupt is sticky, per thread: in every thread, the first ``consume`` / ``read`` of
    that adapter instance to return after ``interrupt()`` was called returns without waiting
    out its timeout (how soon: below). A call blocked at that moment is woken (None / []);
    a thread that was not blocked has its next call take only what is already there (a
    task, events) and return at once (None / [] if nothing is). Later calls wait again.
    A thread's first call ever counts every interrupt the instance has had.
  * So one ``interrupt()`` after ``stop.set()`` is enough, however it races the loop: a loop
    that checks ``stop`` after every call ends within its current turn. No re-interrupting.
  * How soon a blocked call returns. In memory: at once (a condition notify). On Redis:
    ``interrupt()`` writes a wake entry that the blocked command is also waiting on, so the
    call returns one Redis round trip later. If that write fails (Redis unreachable; it is
    logged, never raised) a blocked call returns when its command does: its timeout, or one
    blocking slice (just under the client's ``socket_timeout``, 9 s by default), or the
    connection error. A call that starts after the interrupt never waits, Redis or not: that
    check is local.
  * An interrupt reaches only the adapter instance it is called on, in this process. A
    reader in another process (or on another instance) is not woken: it sees what changed
    when its own wait ends.
  * A call may return early without an interrupt of its own (one fired for another reader
    of the instance): callers treat an empty return as "look again", never as "nothing to do".
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from reaper_engine.models import AgentType, ResultEvent, Task

if TYPE_CHECKING:
    from reaper_engine.models import MissionState


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be decoded or processed, kept with why."""

    source: str  # queue or stream name
    payload: str
    error: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event handed to a reader; acknowledge it by ``delivery_id`` once applied."""

    delivery_id: str
    mission_id: str
    event: ResultEvent
    deliveries: int  # 1 on first delivery, +1 on each re-delivery


class Interrupts:
    """The bookkeeping behind a sticky ``interrupt()``, for adapters.

    A generation counter that ``fire`` bumps, and per thread the generation that thread's
    last consume / read returned in: ``pending`` says whether the calling thread has an
    interrupt its calls have not yet returned after. Not thread-safe by itself: use it under
    the lock that also orders the adapter's waiting (its Condition in memory), so that a call
    cannot check ``pending`` and start waiting around a ``fire``.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._seen = threading.local()

    def fire(self) -> int:
        """Record an interrupt; returns the new generation."""
        self.generation += 1
        return self.generation

    def pending(self) -> bool:
        """True if an interrupt came after this thread's last call returned (or, for a
        thread that never called, if there was any)."""
        seen: int = getattr(self._seen, "generation", 0)
        return seen < self.generation

    def observed(self) -> None:
        """This thread's call is returning: every interrupt so far has reached it."""
        self._seen.generation = self.generation


class TaskQueue(ABC):
    @abstractmethod
    def publish(self, task: Task) -> bool:
        """Queue ``task`` for its agent type; False if a task with that id is already queued."""

    def publish_many(self, tasks: Sequence[Task]) -> int:
        """Queue several tasks; returns how many were newly queued."""
        return sum(1 for task in tasks if self.publish(task))

    @abstractmethod
    def consume(self, agent_type: AgentType, timeout: float) -> Task | None:
        """Take the next task for ``agent_type``, waiting up to ``timeout`` seconds."""

    @abstractmethod
    def discard(self, task_ids: Sequence[str]) -> int:
        """Remove queued, not yet consumed tasks; returns how many were removed."""

    @abstractmethod
    def size(self, agent_type: AgentType) -> int: ...

    @abstractmethod
    def dead_letters(self, agent_type: AgentType) -> list[DeadLetter]: ...

    @abstractmethod
    def interrupt(self) -> None:
        """Release, in every thread, the consume in progress or else the next one: it returns
        without waiting (None unless a task is already queued). See the module docstring."""


class EventBus(ABC):
    @abstractmethod
    def publish(self, event: ResultEvent) -> None: ...

    @abstractmethod
    def read(self, mission_id: str, *, timeout: float, max_count: int = 100) -> list[Delivery]:
        """New events of a mission, waiting up to ``timeout`` seconds for the first."""

    @abstractmethod
    def ack(self, mission_id: str, delivery_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def claim_stale(
        self, mission_id: str, *, min_idle_seconds: float, max_count: int = 100
    ) -> list[Delivery]:
        """Re-deliver events read but not acknowledged for at least ``min_idle_seconds``."""

    @abstractmethod
    def pending_count(self, mission_id: str) -> int: ...

    @abstractmethod
    def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Give up on a delivery: record it with ``error`` and acknowledge it."""

    @abstractmethod
    def dead_letters(self, mission_id: str) -> list[DeadLetter]: ...

    @abstractmethod
    def interrupt(self) -> None:
        """Release, in every thread, the read in progress or else the next one: it returns
        without waiting (only events already there, often []). See the module docstring."""


class MissionStore(ABC):
    @abstractmethod
    def create(self, state: MissionState) -> MissionState:
        """Store a new mission (version 1); raises ValueError if the id exists."""

    @abstractmethod
    def load(self, mission_id: str) -> MissionState | None: ...

    @abstractmethod
    def save(self, state: MissionState) -> MissionState:
        """Store ``state`` if nobody saved since it was loaded; returns it with version + 1."""

    @abstractmethod
    def list_ids(self) -> list[str]:
        """Mission ids, oldest first."""

    def version(self, mission_id: str) -> int | None:
        """The stored version of a mission (None if there is none): lets a reader tell
        whether a copy it holds is current without loading the whole state. Adapters
        override this default, which loads it."""
        state = self.load(mission_id)
        return state.version if state is not None else None


class Leases(ABC):
    """Exclusive, expiring ownership of missions."""

    @abstractmethod
    def acquire(self, mission_id: str, owner: str, ttl: float) -> bool:
        """Take the lease if nobody holds it (or ``owner`` already does); True if held now."""

    @abstractmethod
    def renew(self, mission_id: str, owner: str, ttl: float) -> bool:
        """Extend a lease ``owner`` holds; False if it was lost (expired, taken)."""

    @abstractmethod
    def release(self, mission_id: str, owner: str) -> None:
        """Give the lease up, only if ``owner`` holds it."""
