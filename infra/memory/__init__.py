"""In-memory adapters: the demo, unit tests and the single-host daemon.

They keep messages as JSON text, exactly as the Redis adapters do, so that serialisation
and dead-lettering are exercised by the same contract tests.
"""

from infra.memory.bus import InMemoryEventBus
from infra.memory.leases import LocalLeases
from infra.memory.queue import InMemoryTaskQueue
from infra.memory.store import InMemoryMissionStore

__all__ = ["InMemoryEventBus", "InMemoryMissionStore", "InMemoryTaskQueue", "LocalLeases"]
