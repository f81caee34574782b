"""The planner port: given mission state, what should happen next?

Planners only *propose*. The engine materialises proposals into tasks and owns every limit:
host locks, attempt caps, kill budgets, dry-run and the read-only nature of audits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from reaper_engine.models import Action, MissionState, ResultEvent, Task


@dataclass(frozen=True, slots=True)
class PlannedTask:
    host_id: str
    action: Action
    params: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    delay_seconds: float = 0.0  # backoff before dispatch
    reason: str = ""


class Planner(Protocol):
    name: str

    def initial_tasks(self, state: MissionState) -> list[PlannedTask]:
        """Tasks to start a mission with."""
        ...

    def next_tasks(self, state: MissionState, task: Task, result: ResultEvent) -> list[PlannedTask]:
        """Tasks to run after ``result`` (already applied to ``state``) finished ``task``."""
        ...
