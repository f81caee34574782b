"""The cyclic garbage collector's settings for a long-running process with a large live state.

``reaper engine`` keeps each mission's state in memory between batches of results (thousands
of pydantic objects per hundred hosts) and, per batch, allocates tens of thousands of objects
that live until the batch is saved: the decoded events, their payloads, new tasks and records.
With CPython's default thresholds (a young collection every 700 net allocations of container
objects) those short-lived objects are caught alive by collection after collection, promoted,
and so trigger full collections, each of which walks the whole live state and everything
start-up created. Measured on ``bench/bench_fleet.py``'s mission with the in-memory ports,
the collector took 23-45% of the engine's time at 1000-3000 hosts (hundreds of collections
per run); after :func:`tune_gc`, 0-23% (a few per run: those the state's own growth calls
for, each new object walked a few times rather than at every full collection).

Almost everything the engine frees, it frees by reference counting (a mission state is a
tree, not a web of cycles), so collecting less often costs little memory: the young
generation's threshold also bounds how much cyclic garbage can wait, since objects never
freed count towards it.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000
"""Net allocations of container objects between young collections (CPython's default: 700).
A batch of 500 scan results keeps ~30,000 alive at once (more with more findings), so most
of a batch's objects are freed before a collection sees them. The older generations'
thresholds are left as they are: relative to this one, they keep their usual rhythm."""


def tune_gc() -> None:
    """Collect once, freeze what start-up created, and collect the young generation rarely.

    Call it once, when the process has finished starting up (imports done, configuration
    read, ports connected) and before its main loop. Freezing moves every object alive at
    that point (modules, classes, pydantic schemas: most of what the collector would walk in
    a full collection) to a permanent generation no collection examines again (reference
    counting still frees them); the collection before it keeps start-up's garbage out of it.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
