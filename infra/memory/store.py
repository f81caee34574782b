"""Thread-safe in-memory MissionStore with the same optimistic concurrency as the Redis one."""

from __future__ import annotations

import threading

from infra.codec import decode, encode
from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import MissionState
from reaper_engine.ports import MissionStore


class InMemoryMissionStore(MissionStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docs: dict[str, str] = {}  # insertion order is creation order
        self._versions: dict[str, int] = {}

    def create(self, state: MissionState) -> MissionState:
        saved = state.model_copy(update={"version": 1})
        with self._lock:
            if state.mission_id in self._docs:
                raise ValueError(f"mission '{state.mission_id}' already exists")
            self._docs[state.mission_id] = encode(saved)
            self._versions[state.mission_id] = 1
        return saved

    def load(self, mission_id: str) -> MissionState | None:
        with self._lock:
            doc = self._docs.get(mission_id)
        # Decoding a fresh copy means callers never share mutable state with the store.
        return decode(MissionState, doc) if doc is not None else None

    def save(self, state: MissionState) -> MissionState:
        saved = state.model_copy(update={"version": state.version + 1})
        doc = encode(saved)
        with self._lock:
            current = self._versions.get(state.mission_id)
            if current is None:
                raise ConcurrentUpdateError(f"mission '{state.mission_id}' does not exist")
            if current != state.version:
                raise ConcurrentUpdateError(
                    f"mission '{state.mission_id}' is at version {current}, "
                    f"the copy being saved was loaded at {state.version}"
                )
            self._docs[state.mission_id] = doc
            self._versions[state.mission_id] = saved.version
        return saved

    def version(self, mission_id: str) -> int | None:
        with self._lock:
            return self._versions.get(mission_id)

    def list_ids(self) -> list[str]:
        with self._lock:
            return list(self._docs)
