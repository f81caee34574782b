"""In-memory adapters: the demo, unit tests and the single-host daemon.

They keep messages as JSON text, exactly as the Redis adapters do, so that serialisation
and dead-lettering are exercised by the same contract tests. Each is imported on first use:
the daemon's one-shot scan needs the bus and the queue, not the mission store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reaper_engine.lazy import lazy_exports

if TYPE_CHECKING:
    from infra.memory.bus import InMemoryEventBus
    from infra.memory.leases import LocalLeases
    from infra.memory.queue import InMemoryTaskQueue
    from infra.memory.store import InMemoryMissionStore

_MODULES = {
    "InMemoryEventBus": "bus",
    "InMemoryMissionStore": "store",
    "InMemoryTaskQueue": "queue",
    "LocalLeases": "leases",
}

__all__ = ["InMemoryEventBus", "InMemoryMissionStore", "InMemoryTaskQueue", "LocalLeases"]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(__name__, _MODULES, globals())
