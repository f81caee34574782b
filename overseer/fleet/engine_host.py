"""``reaper engine``: run the MissionEngine of every active mission, one owner per mission.

Missions are created by whoever runs ``reaper mission create`` (it stores the mission and
dispatches its first tasks); engine processes adopt them. Ownership is a lease with a TTL
(:class:`Leases`): an engine runs a mission only while it holds the mission's lease and renews
it well before it expires. When an engine dies, its leases lapse, and a peer (or the engine's
replacement) adopts the mission with ``resume``: in-flight tasks are re-published (queues
drop ids still queued) and results the dead engine read but never acknowledged are reclaimed
from the stream. Results are applied once per task id, so the hand-over loses nothing and
counts nothing twice.

A mission this engine cannot read (a corrupt document, or one a newer Reaper wrote during a
rolling upgrade) is let go and set aside for ``unreadable_retry_seconds``: it must not stop
the adoption of the missions after it, nor cost a load on every poll. An upgraded peer reads
it at once; this engine looks again after the interval, in case an operator repaired it.
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
from reaper_engine.errors import MessageDecodeError
from reaper_engine.models import MissionState
from reaper_engine.ports import EventBus, Leases, MissionStore, TaskQueue

log = structlog.get_logger(__name__)

# A failing step (Redis down) is retried after poll_seconds, doubling up to this cap: long
# enough not to hammer a Redis that is restarting, short enough that leases (15 s by default)
# are renewed soon after it is back. The cap never exceeds a third of the lease either.
MAX_STEP_BACKOFF_SECONDS = 5.0


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
        unreadable_retry_seconds: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
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
        self.unreadable_retry_seconds = unreadable_retry_seconds
        self._monotonic = monotonic
        self._running: dict[str, _Running] = {}
        self._finished: set[str] = set()  # terminal missions: never loaded again
        # Unreadable missions: id -> (when to look again, the error last logged).
        self._unreadable: dict[str, tuple[float, str]] = {}
        self._log = log.bind(engine_id=self.engine_id)
        self.adopted = 0

    @property
    def missions(self) -> list[str]:
        return sorted(self._running)

    def run(self, stop: threading.Event) -> None:
        """Adopt, renew and reap until ``stop`` is set; then stop every mission loop.

        A failing step (Redis unreachable, say) never ends the loop: it is retried with a
        backoff, logged in full the first time and in one line after that.
        """
        self._log.info("engine_host_started", lease_seconds=self.lease_seconds)
        failures = 0
        try:
            while not stop.is_set():
                try:
                    self.step()
                except Exception as err:  # noqa: BLE001 - Redis down: keep trying, leases will tell
                    failures += 1
                    wait = self._backoff(failures)
                    if failures == 1:
                        self._log.exception("engine_host_step_failed", retry_in=wait)
                    else:
                        self._log.warning(
                            "engine_host_step_failed",
                            error=f"{type(err).__name__}: {err}",
                            failures=failures,
                            retry_in=wait,
                        )
                    stop.wait(wait)
                    continue
                if failures:
                    self._log.info("engine_host_recovered", failures=failures)
                    failures = 0
                stop.wait(self.poll_seconds)
        finally:
            self.shutdown()
        self._log.info("engine_host_stopped", adopted=self.adopted)

    def _backoff(self, failures: int) -> float:
        cap = max(self.poll_seconds, min(MAX_STEP_BACKOFF_SECONDS, self.lease_seconds / 3))
        return float(min(cap, self.poll_seconds * 2 ** min(failures - 1, 20)))

    def step(self) -> None:
        """One turn: let go of finished missions, renew leases, adopt what has no owner.

        The heartbeat is written even when the turn fails part-way: the process is alive and
        will retry, and a healthcheck that restarted it would only lose its leases.
        """
        try:
            self._collect_finished()
            self._renew()
            self._adopt(self._candidates())
        except Exception:
            self._beat(step_failed=True)
            raise
        self._beat(step_failed=False)

    def _beat(self, *, step_failed: bool) -> None:
        if self.heartbeat is None:
            return
        try:
            self.heartbeat(self)
        except Exception as err:
            if not step_failed:
                raise
            # Redis is down, most likely: the step's own error (and traceback) is the one to
            # report; a line a turn, not a traceback a turn, for as long as the outage lasts.
            self._log.warning("engine_heartbeat_failed", error=f"{type(err).__name__}: {err}")

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop every mission loop and release its lease; True if all ended in time."""
        for running in self._running.values():
            running.stop.set()
        # One interrupt is enough: it is sticky (reaper_engine.ports), so a loop between
        # reads when it comes does not wait out its next read either.
        self.bus.interrupt()
        deadline = time.monotonic() + timeout
        for running in self._running.values():
            running.thread.join(max(0.0, deadline - time.monotonic()))
        done = not any(r.thread.is_alive() for r in self._running.values())
        for mission_id in list(self._running):
            try:
                self._let_go(mission_id)
            except Exception as err:  # noqa: BLE001 - Redis down: the lease lapses by itself
                self._log.warning(
                    "mission_lease_not_released",
                    mission_id=mission_id,
                    error=f"{type(err).__name__}: {err}",
                    lapses_in=self.lease_seconds,
                )
        return done

    # -- internals --------------------------------------------------------------------------

    def _candidates(self) -> Iterable[str]:
        now = self._monotonic()
        for mission_id in self.store.list_ids():
            if mission_id in self._running or mission_id in self._finished:
                continue
            unreadable = self._unreadable.get(mission_id)
            if unreadable is not None and now < unreadable[0]:
                continue
            yield mission_id

    def _adopt(self, mission_ids: Iterable[str]) -> None:
        for mission_id in mission_ids:
            # The lease first: a mission a live peer runs costs one SET NX per poll, not a
            # load of its whole state.
            if not self.leases.acquire(mission_id, self.engine_id, self.lease_seconds):
                continue
            try:
                state = self.store.load(mission_id)
            except MessageDecodeError as err:
                # One bad document must not stop the missions after it; and the lease goes
                # back at once, so an engine that can read it (a newer one) adopts it.
                self.leases.release(mission_id, self.engine_id)
                self._set_aside(mission_id, err)
                continue
            if mission_id in self._unreadable:
                del self._unreadable[mission_id]
                self._log.info("mission_readable_again", mission_id=mission_id)
            if state is None or state.status.is_terminal:
                if state is not None:
                    self._finished.add(mission_id)
                self.leases.release(mission_id, self.engine_id)
                continue
            self._start(state)

    def _set_aside(self, mission_id: str, err: MessageDecodeError) -> None:
        """Skip an unreadable mission for a while; log the error once, not every retry."""
        error = str(err)
        retry_at = self._monotonic() + self.unreadable_retry_seconds
        previous = self._unreadable.get(mission_id)
        self._unreadable[mission_id] = (retry_at, error)
        if previous is not None and previous[1] == error:
            self._log.debug("mission_still_unreadable", mission_id=mission_id, error=error)
            return
        self._log.error(
            "mission_unreadable",
            mission_id=mission_id,
            error=error,
            retry_in=self.unreadable_retry_seconds,
        )

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
            try:
                state = self.store.load(mission_id)
            except MessageDecodeError as err:
                # Rewritten by something this engine cannot read (a newer engine that took
                # the mission over while we stalled): let it go, do not crash the turn.
                self._let_go(mission_id)
                self._set_aside(mission_id, err)
                continue
            if state is not None and state.status.is_terminal:
                self._finished.add(mission_id)
                self._log.info("mission_released", mission_id=mission_id, status=state.status.value)
            self._let_go(mission_id)

    def _let_go(self, mission_id: str) -> None:
        self._running.pop(mission_id, None)
        self.leases.release(mission_id, self.engine_id)
