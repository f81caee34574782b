"""MissionEngine: one per mission; turns result events into state changes and new tasks.

Every change is load -> modify -> compare-and-set save, retried on a concurrent update, and
only then are its side effects (publishing tasks, discarding queued ones, notices and the
log lines that describe the change) carried out. An event is acknowledged on the bus only
after the state change it caused is saved, so a crash at any point loses nothing:
unacknowledged events are re-delivered, and re-applying an event whose task is already
completed changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog
from pydantic import ValidationError

from reaper_engine.admission import admit, dispatch_due
from reaper_engine.clock import Clock, SystemClock
from reaper_engine.effects import Effects
from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.mission_records import (
    CANCELLED_ERROR,
    LOCKED_ERROR,
    TIMEOUT_ERROR,
    WITHDRAWN,
    complete_task,
    is_late_reap,
    last_record,
    protected_count,
    scanned,
    timeout_result,
)
from reaper_engine.models import (
    Action,
    DiscoverData,
    HostOutcome,
    HostState,
    HostStatus,
    KillOutcome,
    MissionState,
    MissionStatus,
    ReapData,
    ResultEvent,
    ResultStatus,
    ScanData,
    Task,
    TaskRecord,
    VerifyData,
)
from reaper_engine.outcomes import decide_outcome, is_failed_outcome
from reaper_engine.pending_index import PendingIndex
from reaper_engine.planner import PlannedTask, Planner
from reaper_engine.ports import Delivery, EventBus, MissionStore, TaskQueue

log = structlog.get_logger(__name__)

BAD_DATA_ERROR = "BAD_RESULT_DATA"
NOTHING_PLANNED = "nothing planned"
_SAVE_RETRIES = 8
# Task ids per tasks_dispatched log line. Host ids are at most 63 characters, so a task id
# is under 90: a line stays under 9 KiB, below the 16 KiB at which Docker splits log lines.
_DISPATCHED_PER_LINE = 100
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0


class ApplyResult(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # the task already has a result: nothing changes
    UNKNOWN_MISSION = "unknown_mission"
    UNKNOWN_TASK = "unknown_task"
    LATE = "late"  # the real result of a withdrawn task: its kills recorded, nothing planned
    MISMATCH = "mismatch"  # the event does not describe the task it names


@dataclass(frozen=True, slots=True)
class EngineNotice:
    """A change worth showing to a person (the demo's progress lines, dashboards)."""

    kind: str  # dispatched | applied | host_locked | host_done | mission_finished
    mission_id: str
    host_id: str | None
    detail: str
    state: MissionState


Listener = Callable[[EngineNotice], None]


class MissionEngine:
    def __init__(
        self,
        mission_id: str,
        *,
        store: MissionStore,
        queue: TaskQueue,
        bus: EventBus,
        planner: Planner,
        clock: Clock | None = None,
        listener: Listener | None = None,
        redeliver_after_seconds: float = 30.0,
        max_deliveries: int = 3,
        batch_size: int = 500,
    ) -> None:
        self.mission_id = mission_id
        self.store = store
        self.queue = queue
        self.bus = bus
        self.planner = planner
        self.clock: Clock = clock or SystemClock()
        self.listener = listener
        self.redeliver_after_seconds = redeliver_after_seconds
        self.max_deliveries = max_deliveries
        self.left_pending = 0  # deliveries of this loop turn that failed and await a retry
        self.batch_size = batch_size
        self._reusable: MissionState | None = None  # see _mutate
        self._index: PendingIndex | None = None  # of the kept state's pending tasks
        self._lock = threading.RLock()
        self._log = log.bind(mission_id=mission_id)

    # -- commands ---------------------------------------------------------------------------

    def start_mission(self, state: MissionState) -> MissionState:
        """Store ``state`` (a new mission), plan its first tasks and dispatch them."""
        if state.mission_id != self.mission_id:
            raise ValueError(f"state is for mission '{state.mission_id}', not '{self.mission_id}'")
        now = self.clock.now()
        fx = self._effects()
        state = state.model_copy(deep=True)
        state.status = MissionStatus.RUNNING
        state.created_at = state.updated_at = now
        planned = self._ask_planner(lambda: self.planner.initial_tasks(state), fx)
        if fx.planner_error is not None:
            for host in state.hosts.values():
                host.outcome_detail = f"{NOTHING_PLANNED}: planner failed ({fx.planner_error})"
        admit(state, planned, fx, now, dispatch=True)
        dispatch_due(state, fx, now)  # anything the given state had pending
        self._settle(state, fx, now)
        with self._lock:
            saved = self.store.create(state)
            # Only now, and before what the change logs (which may be mission_finished).
            self._log.info(
                "mission_started",
                kind=state.kind.value,
                hosts=len(state.hosts),
                planner=self.planner.name,
                dry_run=state.options.dry_run,
            )
            self._carry_out(saved, fx)
        return saved

    def process_result(self, event: ResultEvent) -> ApplyResult:
        """Apply one result. Safe to call again with the same event: the second call is a no-op."""
        return self.process_results([event])[0]

    def process_results(self, events: Sequence[ResultEvent]) -> list[ApplyResult]:
        """Apply several results in one load-change-save (one round trip per batch, not per
        event); verdicts in the order given. Each event is idempotent as in process_result."""
        verdicts: list[ApplyResult] = []

        def change(state: MissionState, fx: Effects) -> bool:
            verdicts.clear()  # a retry after a save conflict starts again from fresh state
            now = self.clock.now()
            changed = False
            for event in events:
                if event.mission_id != self.mission_id:
                    # Judged alone: one stray event must not cost the batch its real results.
                    verdicts.append(ApplyResult.UNKNOWN_MISSION)
                    continue
                verdict = self._apply_event(state, event, fx, now)
                changed |= verdict in (ApplyResult.APPLIED, ApplyResult.LATE)
                verdicts.append(verdict)
            return changed

        if self._mutate(change, reuse=True, keep=True) is None:
            verdicts = [ApplyResult.UNKNOWN_MISSION] * len(events)
        for event, verdict in zip(events, verdicts, strict=True):
            if verdict is ApplyResult.APPLIED:
                continue
            level = "info" if verdict in (ApplyResult.DUPLICATE, ApplyResult.LATE) else "warning"
            self._log.log(
                _LEVELS[level],
                f"result_{verdict.value}",
                task_id=event.task_id,
                host_id=event.host_id,
                action=event.action.value,
            )
        return verdicts

    def _apply_event(
        self, state: MissionState, event: ResultEvent, fx: Effects, now: datetime
    ) -> ApplyResult:
        record = state.completed_tasks.get(event.task_id)
        if record is not None:
            if is_late_reap(record, event):
                self._fold_late(state, record, event, fx)
                return ApplyResult.LATE
            return ApplyResult.DUPLICATE
        pending = state.pending_tasks.get(event.task_id)
        if pending is None:
            return ApplyResult.UNKNOWN_TASK
        task = pending.task
        if (event.host_id, event.action, event.agent_type) != (
            task.host_id,
            task.action,
            task.agent_type,
        ):
            return ApplyResult.MISMATCH
        self._apply(state, task, event, fx, now)
        return ApplyResult.APPLIED

    def tick(self) -> MissionState | None:
        """Dispatch tasks whose backoff is over; turn overdue tasks into timeout results."""

        def change(state: MissionState, fx: Effects) -> bool:
            if state.status.is_terminal:
                return False
            now = self.clock.now()
            if fx.pending_index(state).quiet_until(now):
                return False  # nothing due or overdue: no walk over every pending task
            changed = False
            for task_id, pending in list(state.pending_tasks.items()):
                if task_id not in state.pending_tasks or pending.dispatched_at is None:
                    continue
                if pending.task.is_expired(now):
                    fx.discard.append(task_id)  # never let a stale task run late
                    self._apply(state, pending.task, timeout_result(pending.task, now), fx, now)
                    changed = True
            changed |= dispatch_due(state, fx, now)
            fx.reindex(state)  # its floor exact again: the next tick walks only when due
            if changed:
                state.updated_at = now
            return changed

        return self._mutate(change, reuse=True, check=True, keep=True)

    def cancel(self, reason: str = "cancelled by operator") -> MissionState | None:
        """Stop scheduling: queued tasks are withdrawn, late results are ignored."""

        def change(state: MissionState, fx: Effects) -> bool:
            if state.status.is_terminal:
                return False
            now = self.clock.now()
            for pending in list(state.pending_tasks.values()):
                self._withdraw(state, pending.task, CANCELLED_ERROR, reason, fx, now)
            state.status = MissionStatus.CANCELLED
            state.finished_at = state.updated_at = now
            for host in state.hosts.values():
                if host.outcome is None:
                    host.outcome = HostOutcome.CANCELLED
                    host.outcome_detail = reason
            fx.note("mission_finished", None, f"cancelled: {reason}")
            return True

        return self._mutate(change)

    def resume(self) -> int:
        """After a restart: re-publish every dispatched task still awaiting a result.

        Delivery is at-least-once; queues drop a task id that is still queued, and a task run
        twice reports a result that is applied once.
        """
        state = self.store.load(self.mission_id)
        if state is None:
            return 0
        # A crash between a save and its side effects may have left withdrawn tasks queued.
        self._discard_withdrawn(state)
        if state.status.is_terminal:
            return 0
        tasks = [p.task for p in state.pending_tasks.values() if p.dispatched_at is not None]
        count = self.queue.publish_many(tasks)
        if count:
            self._log.info("mission_resumed", republished=count)
        return count

    def run_event_loop(
        self, stop: threading.Event, *, max_wait: float = 5.0, resume: bool = False
    ) -> MissionState | None:
        """Apply results until the mission ends or ``stop`` is set; returns the last state.

        ``resume=True`` is for an engine taking over a mission after a crash or restart: it
        re-publishes in-flight tasks and reclaims events another reader left unacknowledged.
        """
        with structlog.contextvars.bound_contextvars(mission_id=self.mission_id):
            recover = resume
            next_claim = time.monotonic() + self.redeliver_after_seconds / 2
            backoff = _BACKOFF_FIRST
            failures = 0  # turns in a row that raised: the traceback is logged for the first
            while not stop.is_set():
                try:
                    self.left_pending = 0
                    if recover:
                        self._recover()
                        recover = False
                    if not self.step(max_wait):
                        break
                    if self.left_pending:
                        # A result that failed to apply: retry it soon, but not in a hot loop.
                        recover = True
                        stop.wait(backoff)
                        backoff = min(backoff * 2, _BACKOFF_MAX)
                        continue
                    if time.monotonic() >= next_claim:
                        next_claim = time.monotonic() + self.redeliver_after_seconds / 2
                        # Also the safety net for effects a save's lost reply left undone.
                        self.resume()
                        for delivery in self.bus.claim_stale(
                            self.mission_id, min_idle_seconds=self.redeliver_after_seconds
                        ):
                            self.handle_delivery(delivery)
                except Exception as err:  # noqa: BLE001 - a store or bus error must not end it
                    failures += 1
                    if failures == 1:
                        self._log.exception("engine_loop_error", retry_in=backoff)
                    else:  # Redis down for a while: one line per retry, not a traceback
                        self._log.warning(
                            "engine_loop_error",
                            error=f"{type(err).__name__}: {err}",
                            failures=failures,
                            retry_in=backoff,
                        )
                    # What the error interrupted (a publish after a save, an unacknowledged
                    # batch) is redone as soon as the backend answers, not after the
                    # redelivery delay or a task's deadline.
                    recover = True
                    stop.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                if failures:
                    self._log.info("engine_loop_recovered", failures=failures)
                    failures = 0
                backoff = _BACKOFF_FIRST
            final = self.store.load(self.mission_id)
            if final is not None and final.status.is_terminal:
                # A publish of ours that landed after another process cancelled the mission
                # (and pulled what was queued then) must not run: pull it again.
                self._discard_withdrawn(final)
            return final

    def _discard_withdrawn(self, state: MissionState) -> None:
        withdrawn = [r.task_id for r in state.completed_tasks.values() if r.error_code in WITHDRAWN]
        if withdrawn:
            self.queue.discard(withdrawn)

    def _recover(self) -> None:
        """Re-publish in-flight tasks and take back every unacknowledged result at once."""
        self.resume()
        for delivery in self.bus.claim_stale(self.mission_id, min_idle_seconds=0):
            self.handle_delivery(delivery)

    def step(self, max_wait: float) -> bool:
        """One turn of the event loop: time-based work, then results until the next thing
        falls due; False once the mission has ended (or is gone)."""
        state = self.tick()
        if state is None or state.status.is_terminal:
            return False
        wait = max_wait
        index = self._index
        # The index's floor is at most the next wakeup: at worst the read ends early.
        wakeup = (
            index.floor
            if index is not None and index.fits(state.pending_tasks)
            else state.next_wakeup()
        )
        if wakeup is not None:
            due_in = (wakeup - self.clock.now()).total_seconds()
            wait = min(max_wait, max(0.0, due_in))
        # ``state`` may be changed in place from here on (see _mutate): not looked at again.
        self.handle_deliveries(
            self.bus.read(self.mission_id, timeout=wait, max_count=self.batch_size)
        )
        return True

    def handle_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Apply a batch in one save and acknowledge it; if the batch fails, fall back to one
        delivery at a time so that a poison event is isolated and the rest still apply.

        What still fails is left pending and noted (``left_pending``): the event loop backs
        off and takes it back at once, rather than after the redelivery delay."""
        if len(deliveries) <= 1:
            for delivery in deliveries:
                self.handle_delivery(delivery)
            return
        try:
            self.process_results([d.event for d in deliveries])
        except Exception:  # noqa: BLE001 - retried one by one below
            self._log.warning("result_batch_failed_retrying_singly", size=len(deliveries))
            for delivery in deliveries:
                self.handle_delivery(delivery)
            return
        self._acknowledge(deliveries)

    def handle_delivery(self, delivery: Delivery) -> None:
        """Process one delivery; acknowledge it only once its change is saved."""
        try:
            self.process_result(delivery.event)
        except Exception as err:  # noqa: BLE001 - a poison event must not kill the engine
            self._log.exception(
                "result_processing_failed",
                task_id=delivery.event.task_id,
                deliveries=delivery.deliveries,
            )
            if delivery.deliveries >= self.max_deliveries:
                self.bus.dead_letter(delivery, f"{type(err).__name__}: {err}")
            else:
                self.left_pending += 1  # re-delivered by claim_stale
            return
        self._acknowledge([delivery])

    def _acknowledge(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge what was handled; dead-letter events that belong to another mission
        (a bug or a forgery: either way someone should see them)."""
        done = []
        for delivery in deliveries:
            if delivery.event.mission_id != self.mission_id:
                self.bus.dead_letter(
                    delivery,
                    f"EVENT_FOREIGN_MISSION: event for mission '{delivery.event.mission_id}' "
                    f"read from mission '{self.mission_id}'",
                )
            else:
                done.append(delivery.delivery_id)
        if done:
            self.bus.ack(self.mission_id, done)

    # -- state changes ----------------------------------------------------------------------

    def _mutate(
        self,
        change: Callable[[MissionState, Effects], bool],
        *,
        reuse: bool = False,
        check: bool = False,
        keep: bool = False,
    ) -> MissionState | None:
        """Load, change, compare-and-set save (retrying on conflict), then carry out effects.

        ``keep`` hands the resulting state to the next call made with ``reuse``, which then
        skips its load: an engine owns its mission (its lease), so the state it saved last is
        nearly always the current one, and a load decodes the whole state — the larger part
        of a result's cost in a big mission. A stale state is safe to change: its save fails
        the version check and the change is made again on a fresh load. ``check`` also
        compares versions before using it (one small read), for callers that act on what
        they find even when they change nothing: the loop's tick must see another process's
        cancel. Any other call forgets the kept state, and so does a failure, since
        ``change`` may have half-changed it.
        """
        with self._lock:
            reused, self._reusable = (self._reusable if reuse else None), None
            index, self._index = self._index, None
            if (
                reused is not None
                and check
                and self.store.version(self.mission_id) != reused.version
            ):
                reused = None
            for _ in range(_SAVE_RETRIES):
                state = reused if reused is not None else self.store.load(self.mission_id)
                reused = None
                if state is None:
                    return None
                # An index fits only the state it was made for (an older copy's is remade).
                fx = self._effects(index)
                if not change(state, fx):
                    self._reusable, self._index = (state, fx.index) if keep else (None, None)
                    return state
                try:
                    saved = self.store.save(state)
                except ConcurrentUpdateError:
                    self._log.info("mission_save_conflict_retrying")
                    continue
                # A store returns a copy of the state it saved, sharing its pending tasks.
                self._reusable, self._index = (saved, fx.index) if keep else (None, None)
                self._carry_out(saved, fx)
                return saved
            raise ConcurrentUpdateError(
                f"mission '{self.mission_id}' kept changing under us ({_SAVE_RETRIES} tries)"
            )

    def _effects(self, index: PendingIndex | None = None) -> Effects:
        # Asked per change, not once: a stdlib-backed logger's level may change later.
        return Effects(
            notify=self.listener is not None, min_level=_min_level(self._log), index=index
        )

    def _carry_out(self, state: MissionState, fx: Effects) -> None:
        for level, event, fields in fx.logs:
            self._log.log(level, event, **fields)
        if fx.discard:
            self.queue.discard(fx.discard)
        if fx.publish:
            self.queue.publish_many(fx.publish)
            self._log_dispatched(fx.publish, fx.min_level)
        if self.listener is not None:
            for kind, host_id, detail in fx.notices:
                self.listener(EngineNotice(kind, self.mission_id, host_id, detail, state))

    def _log_dispatched(self, tasks: Sequence[Task], min_level: int) -> None:
        """At INFO, one ``tasks_dispatched`` line per change (per ``_DISPATCHED_PER_LINE``
        tasks) naming every task it dispatched; at DEBUG also a ``task_dispatched`` line per
        task with its host, action and attempt. Nearly every result dispatches a task, and a
        JSON log line costs about a quarter of what the rest of a result's handling does."""
        if min_level <= logging.DEBUG:
            for task in tasks:
                self._log.debug(
                    "task_dispatched",
                    task_id=task.task_id,
                    host_id=task.host_id,
                    action=task.action.value,
                    attempt=task.attempt,
                )
        if min_level <= logging.INFO:
            for start in range(0, len(tasks), _DISPATCHED_PER_LINE):
                chunk = tasks[start : start + _DISPATCHED_PER_LINE]
                self._log.info(
                    "tasks_dispatched",
                    count=len(chunk),
                    retries=sum(1 for t in chunk if t.attempt > 1),
                    task_ids=[t.task_id for t in chunk],
                )

    def _apply(
        self, state: MissionState, task: Task, event: ResultEvent, fx: Effects, now: datetime
    ) -> None:
        host = state.hosts[task.host_id]
        event = self._apply_payload(host, task, event, state, fx)
        complete_task(state, task, event.status, event.error_code, event.summary, now, fx)
        host.remember_task(task.task_id)
        state.counters.results_applied += 1
        if fx.notify:
            fx.note(
                "applied",
                host.host_id,
                f"{task.action.value} {event.status.value}: {event.summary}".rstrip(": "),
            )
        if fx.logs_at(logging.INFO):
            fx.log(
                logging.INFO,
                "result_applied",
                task_id=task.task_id,
                host_id=host.host_id,
                action=task.action.value,
                status=event.status.value,
                error_code=event.error_code,
            )
        if event.status is ResultStatus.ERROR:
            self._record_failure(state, host, event, fx)
        else:
            status = (
                HostStatus.HEALTHY if event.status is ResultStatus.SUCCESS else HostStatus.DEGRADED
            )
            # Assignments are validated (and mark the host changed): none that change nothing.
            if host.last_status is not status:
                host.last_status = status
        if state.status is MissionStatus.RUNNING and not host.locked:
            planned = self._ask_planner(lambda: self.planner.next_tasks(state, task, event), fx)
            # What this result admits and is due goes out with it; tick() dispatches the rest.
            admit(state, planned, fx, now, dispatch=True)
        # Only this host's tasks changed, so only it can have finished.
        self._settle(state, fx, now, host)
        if state.updated_at != now:  # the same for every result of a batch
            state.updated_at = now

    def _apply_payload(
        self, host: HostState, task: Task, event: ResultEvent, state: MissionState, fx: Effects
    ) -> ResultEvent:
        """Fold a result's data into the host; invalid data turns the result into an error."""
        if event.status is ResultStatus.ERROR:
            return event
        try:
            match task.action:
                case Action.DISCOVER:
                    host.facts = {
                        **host.facts,
                        **DiscoverData.model_validate(event.data).model_dump(mode="json"),
                    }
                case Action.SCAN:
                    before = host.findings
                    host.findings = ScanData.model_validate(event.data).findings
                    # By difference, so a rescan or a retried scan does not count findings
                    # twice (and a result costs the same whatever the mission's size); a
                    # validated assignment only where a count moves.
                    found = len(host.findings) - len(before)
                    protected = protected_count(host.findings) - protected_count(before)
                    if found:
                        state.counters.findings += found
                    if protected:
                        state.counters.protected += protected
                case Action.REAP:
                    self._record_kills(state, host, ReapData.model_validate(event.data))
                case Action.VERIFY:
                    verify = VerifyData.model_validate(event.data)
                    host.survivors = verify.still_alive
        except ValidationError as err:
            fx.log(logging.WARNING, "result_data_invalid", task_id=task.task_id, error=str(err))
            return event.model_copy(
                update={
                    "status": ResultStatus.ERROR,
                    "error_code": BAD_DATA_ERROR,
                    "retriable": False,
                    "summary": f"agent sent invalid {task.action.value} data "
                    f"({err.error_count()} error(s))",
                }
            )
        return event

    def _record_failure(
        self, state: MissionState, host: HostState, event: ResultEvent, fx: Effects
    ) -> None:
        host.failure_count += 1
        host.last_status = HostStatus.DEGRADED
        state.counters.errors += 1
        if event.error_code == TIMEOUT_ERROR:
            state.counters.timeouts += 1
        if host.failure_count < host.max_failures or host.locked:
            return
        host.locked = True
        host.last_status = HostStatus.LOCKED
        host.lock_reason = (
            f"{host.failure_count} failures (last: {event.error_code or 'error'}: {event.summary})"
        )
        # A locked host gets nothing more, including what is already planned or queued.
        for pending in list(state.pending_tasks.values()):
            if pending.task.host_id == host.host_id:
                self._withdraw(
                    state, pending.task, LOCKED_ERROR, host.lock_reason, fx, self.clock.now()
                )
        fx.note("host_locked", host.host_id, host.lock_reason)
        fx.log(logging.WARNING, "host_locked", host_id=host.host_id, reason=host.lock_reason)

    def _withdraw(
        self, state: MissionState, task: Task, code: str, why: str, fx: Effects, now: datetime
    ) -> None:
        """End a task without its result: keep a record, pull it from the queue."""
        complete_task(state, task, ResultStatus.ERROR, code, why, now, fx)
        fx.discard.append(task.task_id)

    def _fold_late(
        self, state: MissionState, record: TaskRecord, event: ResultEvent, fx: Effects
    ) -> None:
        """Record the kills of a reap the engine had already given up on. Plans nothing."""
        host = state.hosts[record.host_id]
        try:
            reap = ReapData.model_validate(event.data)
        except ValidationError:
            reap = ReapData()
        self._record_kills(state, host, reap)
        state.completed_tasks[record.task_id] = record.model_copy(update={"late_applied": True})
        fx.log(
            logging.WARNING,
            "late_reap_result_recorded",
            task_id=record.task_id,
            host_id=record.host_id,
            kills=len(reap.kills),
        )

    def _record_kills(self, state: MissionState, host: HostState, reap: ReapData) -> None:
        host.kills = (*host.kills, *reap.kills)
        for kill in reap.kills:
            if kill.outcome.is_kill and not kill.dry_run:
                state.counters.kills += 1
            elif kill.outcome in (KillOutcome.FAILED, KillOutcome.DENIED):
                state.counters.kill_failures += 1

    def _ask_planner(self, ask: Callable[[], list[PlannedTask]], fx: Effects) -> list[PlannedTask]:
        fx.planner_error = None
        try:
            return list(ask())
        except Exception as err:  # noqa: BLE001 - a broken planner stalls a host, never the engine
            fx.planner_error = f"{type(err).__name__}: {err}"
            fx.log(logging.ERROR, "planner_failed", planner=self.planner.name, exc_info=err)
            return []

    def _settle(
        self, state: MissionState, fx: Effects, now: datetime, only: HostState | None = None
    ) -> None:
        """Record the outcome of hosts with nothing left to do (every host, or ``only``);
        complete the mission if nothing is left at all.

        When the mission completes, every host has an outcome: one that never got a task
        (nothing planned for it, or every proposal refused) is ``incomplete``, with the
        reason. A host that failed for good (outcome ``failed``) gets status ``error``."""
        if state.status is not MissionStatus.RUNNING:
            return
        finishing = not state.pending_tasks
        for host in state.hosts.values() if only is None or finishing else (only,):
            if host.outcome is not None or fx.has_pending(state, host.host_id):
                continue
            last = last_record(state, host)
            if last is None and not host.locked:
                if not finishing:
                    continue  # no task yet: another host's result may still plan one
                outcome, detail = HostOutcome.INCOMPLETE, NOTHING_PLANNED
            else:
                outcome, detail = decide_outcome(
                    state.kind, host, last, scanned=scanned(state, host)
                )
            host.outcome = outcome
            if not host.outcome_detail:  # a reason recorded earlier wins
                host.outcome_detail = detail
            if outcome is HostOutcome.FAILED and host.last_status is not HostStatus.ERROR:
                host.last_status = HostStatus.ERROR
            if fx.notify:
                fx.note("host_done", host.host_id, f"{outcome.value}: {host.outcome_detail}")
        if not finishing:
            return
        outcomes = [h.outcome for h in state.hosts.values()]
        everything_failed = all(o is not None and is_failed_outcome(o) for o in outcomes)
        state.status = MissionStatus.FAILED if everything_failed else MissionStatus.COMPLETED
        state.finished_at = now
        fx.note("mission_finished", None, state.status.value)
        fx.log(
            logging.INFO,
            "mission_finished",
            status=state.status.value,
            kills=state.counters.kills,
            findings=state.counters.findings,
        )


def _min_level(logger: object) -> int:
    """The least severe level ``logger`` writes; NOTSET (write everything) if it cannot say."""
    effective = getattr(logger, "get_effective_level", None)
    return int(effective()) if callable(effective) else logging.NOTSET


_LEVELS = {"info": logging.INFO, "warning": logging.WARNING}
