"""The measurement: methods taking turns within each round, a median of each timed part."""

from __future__ import annotations

import statistics
from collections.abc import Callable

# A method does its own untimed set-up and returns the seconds of each timed part.
Method = Callable[[], dict[str, float]]


def rounds(methods: dict[str, Method], reps: int, *, warm: bool) -> dict[str, dict[str, float]]:
    """Median seconds of each timed part (and of their sum, "total"), the methods taking
    turns within each round."""
    if warm:
        for method in methods.values():
            method()  # imports, Lua scripts, first fork, page cache
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    for _ in range(reps):
        for name, method in methods.items():
            parts = method()
            samples[name].append({**parts, "total": sum(parts.values())})
    return {
        name: {part: statistics.median(s[part] for s in runs) for part in runs[0]}
        for name, runs in samples.items()
    }
