"""The side effects and bookkeeping of one change of a mission's state.

A MissionEngine changes the state, then saves it, and only then carries out what the change
led to: tasks to publish or discard, notices for listeners, log lines. A change retried
after a save conflict starts from fresh ``Effects``, so nothing is done twice or done for a
change that was never saved.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field

from reaper_engine.models import MissionState, PendingTask, Task
from reaper_engine.pending_index import PendingIndex

_NO_TASKS: frozenset[str] = frozenset()


@dataclass
class Effects:
    """What one change of the state leads to once saved, plus that change's bookkeeping."""

    # Whether anyone reads notices, and the least severe level the engine's logger writes:
    # the notices and log lines of every result are built only if they will be used.
    notify: bool = True
    min_level: int = logging.NOTSET
    publish: list[Task] = field(default_factory=list)
    discard: list[str] = field(default_factory=list)
    notices: list[tuple[str, str | None, str]] = field(default_factory=list)
    # Log lines about the change, written like notices once it is saved: a change retried
    # after a save conflict, or never saved, must not log twice or describe what never was.
    logs: list[tuple[int, str, dict[str, object]]] = field(default_factory=list)
    planner_error: str | None = None  # the last planner call of this change raised this
    # The index of the state's pending tasks: the one the engine kept from its last change
    # if it still fits the state, else made on first use; kept up to date by the change, so
    # "is this host still busy?" is O(1), not a walk over every pending task per result.
    index: PendingIndex | None = None

    def note(self, kind: str, host_id: str | None, detail: str) -> None:
        if self.notify:
            self.notices.append((kind, host_id, detail))

    def logs_at(self, level: int) -> bool:
        return level >= self.min_level

    def log(self, level: int, event: str, **fields: object) -> None:
        if level >= self.min_level:
            self.logs.append((level, event, fields))

    def pending_index(self, state: MissionState) -> PendingIndex:
        if self.index is None or not self.index.fits(state.pending_tasks):
            self.index = PendingIndex.of(state.pending_tasks)
        return self.index

    def reindex(self, state: MissionState) -> None:
        """Make the index afresh (its ``floor`` exact again)."""
        self.index = PendingIndex.of(state.pending_tasks)

    def pending_of(self, state: MissionState, host_id: str) -> Collection[str]:
        return self.pending_index(state).by_host.get(host_id, _NO_TASKS)

    def has_pending(self, state: MissionState, host_id: str) -> bool:
        return bool(self.pending_of(state, host_id))

    # An index that does not fit the state being changed is left alone: it is made afresh,
    # from the dict, the first time it is asked for.
    def pending_added(self, state: MissionState, entry: PendingTask) -> None:
        if self.index is not None and self.index.fits(state.pending_tasks):
            self.index.added(entry)

    def pending_removed(self, state: MissionState, task: Task) -> None:
        if self.index is not None and self.index.fits(state.pending_tasks):
            self.index.removed(task)
