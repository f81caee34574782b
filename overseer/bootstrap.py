"""The one place where adapters are wired to the domain.

``bootstrap`` takes every port as an argument, so production (Redis), the demo and the tests
(in-memory) build the same OverseerService. ``in_memory_fleet`` is the whole swarm in one
process: in-memory ports, one agent per OS queue on threads, over the given transports.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import TracebackType

from agents.os_agents import AGENTS
from agents.pool import AgentPool
from agents.transports.base import TransportFactory
from agents.transports.router import TransportRouter
from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue
from overseer.service import OverseerService, PlannerFactory, default_planners
from reaper_engine.audit import AuditSink
from reaper_engine.clock import Clock
from reaper_engine.engine import Listener
from reaper_engine.models import AgentType, TransportKind
from reaper_engine.ports import EventBus, MissionStore, TaskQueue
from reaper_engine.rules import DEFAULT_RULES, Rule
from reaper_engine.safety import SafetySettings


def bootstrap(
    *,
    store: MissionStore,
    queue: TaskQueue,
    bus: EventBus,
    planners: PlannerFactory = default_planners,
    clock: Clock | None = None,
    listener: Listener | None = None,
    run_loops: bool = True,
) -> OverseerService:
    return OverseerService(
        store=store,
        queue=queue,
        bus=bus,
        planners=planners,
        clock=clock,
        listener=listener,
        run_loops=run_loops,
    )


@dataclass
class Fleet:
    """An overseer and its agents in one process; a context manager that stops both."""

    overseer: OverseerService
    agents: AgentPool
    store: InMemoryMissionStore
    queue: InMemoryTaskQueue
    bus: InMemoryEventBus

    def close(self, timeout: float = 10.0) -> bool:
        agents_done = self.agents.stop(timeout)
        loops_done = self.overseer.shutdown(timeout)
        return agents_done and loops_done

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def in_memory_fleet(
    transports: Mapping[TransportKind, TransportFactory],
    *,
    rules: tuple[Rule, ...] = DEFAULT_RULES,
    safety: SafetySettings | None = None,
    clock: Clock | None = None,
    listener: Listener | None = None,
    audit: AuditSink | None = None,
    threads_per_agent: int = 2,
    agent_types: Collection[AgentType] | None = None,
) -> Fleet:
    """``agent_types``: the agents to run (default: one of each, for a simulated lab)."""
    store, queue, bus = InMemoryMissionStore(), InMemoryTaskQueue(), InMemoryEventBus()
    router = TransportRouter(transports)
    agents = [
        cls(queue, bus, router, rules=rules, safety=safety, clock=clock, audit=audit)
        for agent_type, cls in AGENTS.items()
        if agent_types is None or agent_type in agent_types
    ]
    overseer = bootstrap(store=store, queue=queue, bus=bus, clock=clock, listener=listener)
    pool = AgentPool(agents, threads_per_agent=threads_per_agent).start()
    return Fleet(overseer=overseer, agents=pool, store=store, queue=queue, bus=bus)
