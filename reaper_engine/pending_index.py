"""An index of a mission's pending tasks: by host, and when the engine next has work.

Asked per result ("is this host still busy?") and per turn of the event loop ("is any task
due or overdue?"), each question would otherwise be a walk over every pending task: in a
1000-host mission that walk, not the results, was most of what a small batch cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from reaper_engine.models import PendingTask, Task


@dataclass(slots=True)
class PendingIndex:
    """Pending task ids by host, and ``floor``: the earliest ``PendingTask.wakeup`` — no
    pending task needs the engine before it (None when nothing is pending).

    An index describes one ``pending_tasks`` dict object (``fits``): a state loaded afresh
    has another, so an index made for an older copy is never used for it. The changes that
    edit the dict tell the index (``added``, ``removed``). ``floor`` is exact when the index
    is made and only ever lowered after; a task leaving, or dispatched (its deadline comes
    after its backoff), leaves it a lower bound, which is all its readers need."""

    source: dict[str, PendingTask]
    by_host: dict[str, set[str]]
    floor: datetime | None

    @classmethod
    def of(cls, pending: dict[str, PendingTask]) -> PendingIndex:
        by_host: dict[str, set[str]] = {}
        floor: datetime | None = None
        for task_id, entry in pending.items():
            by_host.setdefault(entry.task.host_id, set()).add(task_id)
            at = entry.wakeup()
            if floor is None or at < floor:
                floor = at
        return cls(pending, by_host, floor)

    def fits(self, pending: dict[str, PendingTask]) -> bool:
        return self.source is pending

    def added(self, entry: PendingTask) -> None:
        task = entry.task
        self.by_host.setdefault(task.host_id, set()).add(task.task_id)
        at = entry.wakeup()
        if self.floor is None or at < self.floor:
            self.floor = at

    def removed(self, task: Task) -> None:
        ids = self.by_host.get(task.host_id)
        if ids is not None:
            ids.discard(task.task_id)
            if not ids:
                del self.by_host[task.host_id]

    def quiet_until(self, now: datetime) -> bool:
        """Whether no pending task can be due or overdue at ``now``."""
        return self.floor is None or now < self.floor
