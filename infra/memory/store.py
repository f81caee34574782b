"""Thread-safe in-memory MissionStore with the same optimistic concurrency as the Redis one.

It keeps each mission as JSON documents in the same parts as the Redis store (a head, then
one document per host, pending task and task record; see infra/state_parts.py) and writes
only what changed, so it behaves, and costs, like the store it stands in for. Keeping JSON,
not objects, means callers never share mutable state with the store.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

from infra.state_parts import PartTracker, StateDelta, assemble, head_json, new_revision
from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import MissionState
from reaper_engine.ports import MissionStore


@dataclass
class _Stored:
    version: int
    revision: str = ""
    head: str = ""
    host_order: tuple[str, ...] = ()
    hosts: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)

    def write(self, delta: StateDelta, version: int, revision: str) -> None:
        if delta.full:
            self.hosts, self.pending, self.done = {}, {}, {}
            self.host_order = delta.host_order
        self.hosts.update(delta.hosts)
        for docs, written, gone in (
            (self.pending, delta.pending, delta.pending_gone),
            (self.done, delta.done, delta.done_gone),
        ):
            docs.update(written)
            for key in gone:
                docs.pop(key, None)
        self.head = delta.head
        self.version = version
        self.revision = revision


class InMemoryMissionStore(MissionStore):
    # The test suite turns this on (tests/conftest.py): every save is read back whole and
    # compared with the state saved, so a change that no assignment recorded (a value
    # mutated in place, which a delta does not see) fails the test that made it.
    verify_saves: ClassVar[bool] = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._missions: dict[str, _Stored] = {}  # insertion order is creation order
        self._parts = PartTracker()

    def create(self, state: MissionState) -> MissionState:
        saved = state.model_copy(update={"version": 1})
        delta = self._parts.delta(saved, head_json(saved), full=True)
        revision = new_revision()
        with self._lock:
            if state.mission_id in self._missions:
                raise ValueError(f"mission '{state.mission_id}' already exists")
            stored = _Stored(version=1)
            stored.write(delta, 1, revision)
            self._missions[state.mission_id] = stored
        self._parts.saved(saved, revision)
        return saved

    def load(self, mission_id: str) -> MissionState | None:
        with self._lock:
            stored = self._missions.get(mission_id)
            if stored is None:
                return None
            parts = stored.head, dict(stored.hosts), dict(stored.pending), dict(stored.done)
            order, revision = stored.host_order, stored.revision
        state = assemble(*parts, host_order=order)
        self._parts.loaded(state, revision)
        return state

    def save(self, state: MissionState) -> MissionState:
        saved = state.model_copy(update={"version": state.version + 1})
        delta = self._parts.delta(state, head_json(saved))
        revision = new_revision()
        with self._lock:
            stored = self._missions.get(state.mission_id)
            if stored is None:
                raise ConcurrentUpdateError(f"mission '{state.mission_id}' does not exist")
            if stored.version != state.version:
                raise ConcurrentUpdateError(
                    f"mission '{state.mission_id}' is at version {stored.version}, "
                    f"the copy being saved was loaded at {state.version}"
                )
            if delta.base is not None and delta.base != stored.revision:
                raise ConcurrentUpdateError(
                    f"mission '{state.mission_id}' is not the copy this store saw: reload it"
                )
            stored.write(delta, saved.version, revision)
            if self.verify_saves:
                _verify(stored, saved)
        self._parts.saved(saved, revision)
        return saved

    def version(self, mission_id: str) -> int | None:
        with self._lock:
            stored = self._missions.get(mission_id)
            return stored.version if stored is not None else None

    def list_ids(self) -> list[str]:
        with self._lock:
            return list(self._missions)


def _verify(stored: _Stored, saved: MissionState) -> None:
    reread = assemble(
        stored.head, stored.hosts, stored.pending, stored.done, host_order=stored.host_order
    )
    if reread != saved:
        raise AssertionError(
            f"mission '{saved.mission_id}' version {saved.version}: what the store holds "
            "differs from the state saved (a value changed in place, not assigned?)"
        )
