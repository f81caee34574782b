"""OverseerService: creates missions, owns their engines and event loops, answers status."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

import structlog

from reaper_engine.clock import Clock, SystemClock
from reaper_engine.engine import EngineNotice, Listener, MissionEngine
from reaper_engine.errors import MissionNotFoundError
from reaper_engine.models import (
    HostSpec,
    HostState,
    Inventory,
    MissionKind,
    MissionOptions,
    MissionState,
    MissionSummary,
)
from reaper_engine.planner import Planner
from reaper_engine.ports import EventBus, MissionStore, TaskQueue
from reaper_engine.rule_planner import RuleBasedPlanner

log = structlog.get_logger(__name__)

PlannerFactory = Callable[[str], Planner]


def default_planners(name: str) -> Planner:
    if name == "rules":
        return RuleBasedPlanner()
    raise ValueError(f"unknown planner '{name}' (available: rules)")


class OverseerService:
    def __init__(
        self,
        *,
        store: MissionStore,
        queue: TaskQueue,
        bus: EventBus,
        planners: PlannerFactory = default_planners,
        clock: Clock | None = None,
        listener: Listener | None = None,
        run_loops: bool = True,
    ) -> None:
        self.store = store
        self.queue = queue
        self.bus = bus
        self.planners = planners
        self.clock: Clock = clock or SystemClock()
        self.listener = listener
        self.run_loops = run_loops
        self.engines: dict[str, MissionEngine] = {}
        self._loops: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._changed = threading.Condition()

    def create_mission(
        self,
        kind: MissionKind | str,
        inventory: Inventory | Sequence[HostSpec],
        options: MissionOptions | None = None,
        *,
        mission_id: str | None = None,
    ) -> MissionState:
        """Create a mission over ``inventory``, dispatch its first tasks, start its loop."""
        hosts = inventory.hosts if isinstance(inventory, Inventory) else tuple(inventory)
        if not hosts:
            raise ValueError("a mission needs at least one host")
        options = options or MissionOptions()
        planner = self.planners(options.planner)
        mission_id = mission_id or _new_mission_id(self.clock)
        state = MissionState(
            mission_id=mission_id,
            kind=MissionKind(kind),
            options=options,
            hosts={h.host_id: HostState.from_spec(h) for h in hosts},
        )
        engine = self._engine(mission_id, planner)
        saved = engine.start_mission(state)
        log.info("mission_created", mission_id=mission_id, kind=saved.kind.value, hosts=len(hosts))
        if self.run_loops and not saved.status.is_terminal:
            self._start_loop(engine)
        return saved

    def get_mission_status(self, mission_id: str) -> MissionState:
        state = self.store.load(mission_id)
        if state is None:
            raise MissionNotFoundError(f"no mission '{mission_id}'")
        return state

    def list_missions(self) -> list[MissionSummary]:
        states = (self.store.load(mid) for mid in self.store.list_ids())
        return [MissionSummary.of(s) for s in states if s is not None]

    def cancel_mission(
        self, mission_id: str, reason: str = "cancelled by operator"
    ) -> MissionState:
        engine = self.engines.get(mission_id)
        if engine is None:
            state = self.get_mission_status(mission_id)  # raises if unknown
            engine = self._engine(mission_id, self.planners(state.options.planner))
        cancelled = engine.cancel(reason)
        # Wakes a loop blocked reading *this* service's bus, or about to (run_loops=True, as
        # in the demo), which then sees the final status at once. An engine in another
        # process (`reaper engine`) is not woken: its loop reloads the state every turn and
        # stops within its max_wait (1 s). Meanwhile it cannot undo the cancel: every change
        # it makes is a compare-and-set on a fresh load, which now finds the mission cancelled.
        self.bus.interrupt()
        return cancelled or self.get_mission_status(mission_id)

    def wait_for(self, mission_id: str, timeout: float) -> MissionState:
        """Block until the mission reaches a final status or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                state = self.get_mission_status(mission_id)
                remaining = deadline - time.monotonic()
                if state.status.is_terminal or remaining <= 0:
                    return state
                self._changed.wait(remaining)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop every mission loop; True if all ended within ``timeout``.

        One interrupt is enough: it is sticky per thread (reaper_engine.ports), so a loop
        about to read when it fires does not block, and then sees ``_stop``.
        """
        self._stop.set()
        self.bus.interrupt()
        deadline = time.monotonic() + timeout
        for thread in list(self._loops.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._loops.values())

    # -- internals --------------------------------------------------------------------------

    def _engine(self, mission_id: str, planner: Planner) -> MissionEngine:
        engine = MissionEngine(
            mission_id,
            store=self.store,
            queue=self.queue,
            bus=self.bus,
            planner=planner,
            clock=self.clock,
            listener=self._notify,
        )
        self.engines[mission_id] = engine
        return engine

    def _start_loop(self, engine: MissionEngine) -> None:
        def loop() -> None:
            try:
                engine.run_event_loop(self._stop)
            except Exception:
                log.exception("engine_loop_crashed", mission_id=engine.mission_id)
            finally:
                with self._changed:
                    self._changed.notify_all()

        thread = threading.Thread(target=loop, name=f"engine-{engine.mission_id}", daemon=True)
        self._loops[engine.mission_id] = thread
        thread.start()

    def _notify(self, notice: EngineNotice) -> None:
        if self.listener is not None:
            try:
                self.listener(notice)
            except Exception:
                log.exception("listener_failed", kind=notice.kind)
        with self._changed:
            self._changed.notify_all()


def _new_mission_id(clock: Clock) -> str:
    return f"m-{clock.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
