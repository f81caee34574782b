"""Leases within one process (tests, and engines sharing in-memory ports)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from reaper_engine.ports import Leases


class LocalLeases(Leases):
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[str, float]] = {}
        self._monotonic = monotonic

    def acquire(self, mission_id: str, owner: str, ttl: float) -> bool:
        with self._lock:
            now = self._monotonic()
            holder = self._held.get(mission_id)
            if holder is not None and holder[0] != owner and holder[1] > now:
                return False
            self._held[mission_id] = (owner, now + ttl)
            return True

    def renew(self, mission_id: str, owner: str, ttl: float) -> bool:
        with self._lock:
            now = self._monotonic()
            holder = self._held.get(mission_id)
            if holder is None or holder[0] != owner or holder[1] <= now:
                return False
            self._held[mission_id] = (owner, now + ttl)
            return True

    def release(self, mission_id: str, owner: str) -> None:
        with self._lock:
            holder = self._held.get(mission_id)
            if holder is not None and holder[0] == owner:
                del self._held[mission_id]
