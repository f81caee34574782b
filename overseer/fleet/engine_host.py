"""``reaper engine``: run the MissionEngine of every active mission, one owner per mission.

Missions are created by whoever runs ``reaper mission create`` (it stores the mission and
dispatches its first tasks); engine processes adopt them. Ownership is a lease with a TTL
(:class:`Leases`): an engine runs a mission only while it holds the mission's lease and renews
it well before it expires. When an engine dies, its leases lapse, and a peer (or the engine's
replacement) adopts the mission with ``resume``: in-flight tasks are re-published (queues
drop ids still queued) and results the dead engine read but never acknowledged are reclaimed
from the stream. Results are applied once per task id, so the hand-over loses nothing and
counts nothing twice.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from overseer.service import PlannerFactory, default_planners
from reaper_engine.clock import Clock, SystemClock
from reaper_engine.engine import Listener, MissionEngine
from reaper_engine.models import MissionState
from reaper_engine.ports import EventBus, Leases, MissionStore, TaskQueue

log = structlog.get_logger(__name__)


def new_engine_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Running:
    engine: MissionEngine
    stop: threading.Event
    thread: threading.Thread


class EngineHost:
    """Adopts active missions, runs each on a thread, renews their leases, lets go cleanly."""

    def __init__(
        self,
        *,
        store: MissionStore,
        queue: TaskQueue,
        bus: EventBus,
        leases: Leases,
        planners: PlannerFactory = default_planners,
        clock: Clock | None = None,
        listener: Listener | None = None,
        engine_id: str | None = None,
        poll_seconds: float = 1.0,
        lease_seconds: float = 15.0,
        max_wait: float = 1.0,
        redeliver_after_seconds: float = 30.0,
        heartbeat: Callable[[EngineHost], None] | None = None,
    ) -> None:
        if lease_seconds <= 3 * poll_seconds:
            # Renewal happens once per poll: a lease shorter than a few polls could lapse
            # while its owner is healthy, and a peer would adopt a mission still running.
            raise ValueError("lease_seconds must exceed 3 x poll_seconds")
        self.store = store
        self.queue = queue
        self.bus = bus
        self.leases = leases
        self.planners = planners
        self.clock: Clock = clock or SystemClock()
        self.listener = listener
        self.engine_id = engine_id or new_engine_id()
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.max_wait = max_wait
        self.redeliver_after_seconds = redeliver_after_seconds
        self.heartbeat = heartbeat
        self._running: dict[str, _Running] = {}
        self._finished: set[str] = set()  # terminal missions: never loaded again
        self._log = log.bind(engine_id=self.engine_id)
        self.adopted = 0

    @property
    def missions(self) -> list[str]:
        return sorted(self._running)

    def run(self, stop: threading.Event) -> None:
        """Adopt, renew and reap until ``stop`` is set; then stop every mission loop."""
        self._log.info("engine_host_started", lease_seconds=self.lease_seconds)
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception:  # noqa: BLE001 - Redis down: keep trying, leases will tell
                    self._log.exception("engine_host_step_failed")
                stop.wait(self.poll_seconds)
        finally:
            self.shutdown()
        self._log.info("engine_host_stopped", adopted=self.adopted)

    def step(self) -> None:
        """One turn: let go of finished missions, renew leases, adopt what has no owner."""
        self._collect_finished()
        self._renew()
        self._adopt(self._candidates())
        if self.heartbeat is not None:
            self.heartbeat(self)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop every mission loop and release its lease; True if all ended in time."""
        for running in self._running.values():
            running.stop.set()
        deadline = time.monotonic() + timeout
        while any(r.thread.is_alive() for r in self._running.values()):
            if time.monotonic() >= deadline:
                break
            self.bus.interrupt()
            for running in self._running.values():
                running.thread.join(0.05)
        done = not any(r.thread.is_alive() for r in self._running.values())
        for mission_id in list(self._running):
            self._let_go(mission_id)
        return done

    # -- internals --------------------------------------------------------------------------

    def _candidates(self) -> Iterable[str]:
        for mission_id in self.store.list_ids():
            if mission_id in self._running or mission_id in self._finished:
                continue
            yield mission_id

    def _adopt(self, mission_ids: Iterable[str]) -> None:
        for mission_id in mission_ids:
            # The lease first: a mission a live peer runs costs one SET NX per poll, not a
            # load of its whole state.
            if not self.leases.acquire(mission_id, self.engine_id, self.lease_seconds):
                continue
            state = self.store.load(mission_id)
            if state is None or state.status.is_terminal:
                if state is not None:
                    self._finished.add(mission_id)
                self.leases.release(mission_id, self.engine_id)
                continue
            self._start(state)

    def _start(self, state: MissionState) -> None:
        mission_id = state.mission_id
        try:
            planner = self.planners(state.options.planner)
        except ValueError as err:
            # A mission asking for a planner this engine lacks: leave it to one that has it.
            self._log.error("mission_planner_unavailable", mission_id=mission_id, error=str(err))
            self.leases.release(mission_id, self.engine_id)
            self._finished.add(mission_id)
            return
        engine = MissionEngine(
            mission_id,
            store=self.store,
            queue=self.queue,
            bus=self.bus,
            planner=planner,
            clock=self.clock,
            listener=self.listener,
            redeliver_after_seconds=self.redeliver_after_seconds,
        )
        stop = threading.Event()

        def loop() -> None:
            try:
                engine.run_event_loop(stop, max_wait=self.max_wait, resume=True)
            except Exception:  # noqa: BLE001 - logged; the lease lapses and a peer adopts it
                self._log.exception("engine_loop_crashed", mission_id=mission_id)

        thread = threading.Thread(target=loop, name=f"engine-{mission_id}", daemon=True)
        self._running[mission_id] = _Running(engine, stop, thread)
        self.adopted += 1
        self._log.info("mission_adopted", mission_id=mission_id, status=state.status.value)
        thread.start()

    def _renew(self) -> None:
        for mission_id, running in list(self._running.items()):
            if not self.leases.renew(mission_id, self.engine_id, self.lease_seconds):
                # Someone else owns it now (we stalled past the TTL): stop at once, so two
                # engines never schedule the same mission.
                self._log.warning("mission_lease_lost", mission_id=mission_id)
                running.stop.set()
                self.bus.interrupt()

    def _collect_finished(self) -> None:
        for mission_id, running in list(self._running.items()):
            if running.thread.is_alive():
                continue
            state = self.store.load(mission_id)
            if state is not None and state.status.is_terminal:
                self._finished.add(mission_id)
                self._log.info("mission_released", mission_id=mission_id, status=state.status.value)
            self._let_go(mission_id)

    def _let_go(self, mission_id: str) -> None:
        self._running.pop(mission_id, None)
        self.leases.release(mission_id, self.engine_id)
