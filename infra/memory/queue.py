"""Thread-safe in-memory TaskQueue: one FIFO per agent type, JSON payloads."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from infra.codec import decode, encode
from reaper_engine.clock import utcnow
from reaper_engine.errors import MessageDecodeError
from reaper_engine.log import get_logger
from reaper_engine.models import AgentType, Task
from reaper_engine.ports import DeadLetter, Interrupts, TaskQueue

log = get_logger(__name__)


class InMemoryTaskQueue(TaskQueue):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[AgentType, deque[tuple[str, str]]] = {a: deque() for a in AgentType}
        self._dead: dict[AgentType, list[DeadLetter]] = {a: [] for a in AgentType}
        self._queued: set[str] = set()  # ids in the queues: a duplicate check is O(1)
        self._interrupts = Interrupts()  # guarded by _cond; see interrupt()

    def publish(self, task: Task) -> bool:
        with self._cond:
            if task.task_id in self._queued:
                return False
            self._queued.add(task.task_id)
            self._queues[task.agent_type].append((task.task_id, encode(task)))
            self._cond.notify_all()
        return True

    def push_raw(self, agent_type: AgentType, payload: str) -> None:
        """Queue an arbitrary payload, as a foreign writer could (tests of dead-lettering)."""
        with self._cond:
            self._queues[agent_type].append(("<raw>", payload))
            self._cond.notify_all()

    def consume(self, agent_type: AgentType, timeout: float) -> Task | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            generation = self._interrupts.generation
            if self._interrupts.pending():
                deadline = 0.0  # interrupted since this thread's last call: do not wait
            try:
                while True:
                    queue = self._queues[agent_type]
                    while queue:
                        task_id, payload = queue.popleft()
                        self._queued.discard(task_id)
                        try:
                            return decode(Task, payload)
                        except MessageDecodeError as err:
                            self._dead_letter(agent_type, payload, str(err))
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or generation != self._interrupts.generation:
                        return None
                    self._cond.wait(remaining)
            finally:
                self._interrupts.observed()

    def _dead_letter(self, agent_type: AgentType, payload: str, error: str) -> None:
        self._dead[agent_type].append(
            DeadLetter(source=agent_type.value, payload=payload, error=error, at=utcnow())
        )
        log.warning("task_dead_lettered", queue=agent_type.value, error=error)

    def discard(self, task_ids: Sequence[str]) -> int:
        wanted = set(task_ids)
        removed = 0
        with self._cond:
            for agent_type, queue in self._queues.items():
                kept = deque(item for item in queue if item[0] not in wanted)
                removed += len(queue) - len(kept)
                self._queues[agent_type] = kept
            self._queued -= wanted
        return removed

    def size(self, agent_type: AgentType) -> int:
        with self._cond:
            return len(self._queues[agent_type])

    def dead_letters(self, agent_type: AgentType) -> list[DeadLetter]:
        with self._cond:
            return list(self._dead[agent_type])

    def interrupt(self) -> None:
        """Sticky per thread (see reaper_engine.ports): wakes every blocked consume, and
        makes the next consume of every other thread return without waiting."""
        with self._cond:
            self._interrupts.fire()
            self._cond.notify_all()
