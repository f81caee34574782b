"""The benchmark's mission: simulated hosts, their tasks, and the results the agent reports."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from agents.os_agents import AGENTS
from agents.simulation import SimulatedLab
from agents.transports.router import TransportRouter
from infra.memory import InMemoryEventBus, InMemoryTaskQueue
from reaper_engine.clock import utcnow
from reaper_engine.models import (
    OS,
    Action,
    HostSpec,
    HostState,
    MissionKind,
    MissionOptions,
    MissionState,
    ResultEvent,
    Task,
    TransportKind,
)

# The lab's process tables (agents/simulation/tables), one host in four of each.
TABLES = [
    (OS.LINUX, "linux-incident", "noah"),
    (OS.LINUX, "linux-ci", "ci"),
    (OS.MACOS, "macos-dev", "dana"),
    (OS.WINDOWS, "windows-dev", "LAB\\builder"),
]
TASK_TIMEOUT = 3600.0  # nothing times out during a run


def host_specs(count: int) -> list[HostSpec]:
    specs = []
    for i in range(count):
        os_, table, user = TABLES[i % len(TABLES)]
        specs.append(
            HostSpec(
                host_id=f"host-{i:05d}.bench",
                os=os_,
                user=user,
                tags=("bench",),
                options={"process_table": table},
            )
        )
    return specs


def result_templates() -> dict[tuple[str, Action], ResultEvent]:
    """The results the real agent reports for a discover and a scan of each table."""
    lab = SimulatedLab()
    router = TransportRouter({TransportKind.SIMULATED: lab})
    out: dict[tuple[str, Action], ResultEvent] = {}
    for spec in host_specs(len(TABLES)):
        agent = AGENTS[spec.agent_type](InMemoryTaskQueue(), InMemoryEventBus(), router)
        for action in (Action.DISCOVER, Action.SCAN):
            task = bench_task(spec, action, "template")
            out[(str(spec.options["process_table"]), action)] = agent.handle(task)
    return out


def bench_task(spec: HostSpec, action: Action, mission_id: str) -> Task:
    now = utcnow()
    return Task(
        task_id=f"{action.value}-{spec.host_id}-{uuid.uuid4().hex[:12]}",
        mission_id=mission_id,
        host_id=spec.host_id,
        agent_type=spec.agent_type,
        action=action,
        created_at=now,
        deadline=now + timedelta(seconds=TASK_TIMEOUT),
        target=spec,
    )


def new_mission(mission_id: str, specs: Sequence[HostSpec]) -> MissionState:
    return MissionState(
        mission_id=mission_id,
        kind=MissionKind.AUDIT,
        hosts={spec.host_id: HostState.from_spec(spec) for spec in specs},
        options=MissionOptions(task_timeout_seconds=TASK_TIMEOUT),
    )


def results_for(
    tasks: Sequence[Task], templates: dict[tuple[str, Action], ResultEvent]
) -> list[ResultEvent]:
    """A success result for each task, carrying what the agent reports for its host's table."""
    out = []
    for task in tasks:
        template = templates[(str(task.target.options["process_table"]), task.action)]
        out.append(
            template.model_copy(
                update={
                    "task_id": task.task_id,
                    "mission_id": task.mission_id,
                    "host_id": task.host_id,
                    "agent_type": task.agent_type,
                    "ts": utcnow(),
                }
            )
        )
    return out
