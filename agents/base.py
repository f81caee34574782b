"""The agent loop: consume a task, refuse it if stale, dispatch by action, publish a result.

Nothing a handler raises kills the agent: an AgentError becomes an error result with its
error_code and retriable flag; anything else becomes INTERNAL_ERROR.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from agents.terminator import Terminator
from agents.transports.base import ProcessListing, Transport, TransportFactory
from reaper_engine.audit import AuditSink
from reaper_engine.clock import Clock, SystemClock
from reaper_engine.detector import Detector
from reaper_engine.errors import AgentError, TaskRefusedError, UnknownActionError
from reaper_engine.log import bound_contextvars, get_logger
from reaper_engine.models import (
    Action,
    AgentType,
    Finding,
    KillOutcome,
    KillRecord,
    ProcessState,
    ReapData,
    ReapParams,
    ResultEvent,
    ResultStatus,
    ScanData,
    Task,
    VerifyData,
    VerifyParams,
)
from reaper_engine.ports import EventBus, TaskQueue
from reaper_engine.rules import DEFAULT_RULES, Rule
from reaper_engine.safety import SafetyPolicy, SafetySettings, policy_for

log = get_logger(__name__)

Handler = Callable[[Task, Transport], ResultEvent]

_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 5.0
# A result is the only record of what a task did on a host (a reap's kills): it is retried
# for as long as the process lives, at this interval at most once the backoff has grown.
_PUBLISH_BACKOFF_MAX = 5.0


@dataclass(frozen=True, slots=True)
class _Look:
    listing: ProcessListing
    policy: SafetyPolicy
    findings: list[Finding]


class BaseAgent:
    agent_type: ClassVar[AgentType]

    def __init__(
        self,
        queue: TaskQueue,
        bus: EventBus,
        transports: TransportFactory,
        *,
        rules: Sequence[Rule] = DEFAULT_RULES,
        safety: SafetySettings | None = None,
        clock: Clock | None = None,
        audit: AuditSink | None = None,
        config_file: str | None = None,
    ) -> None:
        self.config_file = config_file  # named in every audit record
        self.queue = queue
        self.bus = bus
        self.transports = transports
        self.detector = Detector(rules)
        self.safety = safety or SafetySettings()
        self.clock: Clock = clock or SystemClock()
        self.audit = audit
        self._rules = {r.name: r for r in self.detector.rules}
        self._handlers: dict[Action, Handler] = {
            Action.DISCOVER: self.discover,
            Action.SCAN: self.scan,
            Action.REAP: self.reap,
            Action.VERIFY: self.verify,
        }
        self.handled = 0

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, wait: float = 5.0) -> None:
        """Consume until ``stop`` is set; ``queue.interrupt()`` makes a stop immediate."""
        log.info("agent_started", agent_type=self.agent_type.value)
        backoff = _BACKOFF_FIRST
        while not stop.is_set():
            try:
                task = self.queue.consume(self.agent_type, timeout=wait)
                if task is None:
                    continue
                self.run_one(task, stop)
                backoff = _BACKOFF_FIRST
            except Exception:
                log.exception("agent_loop_error", agent_type=self.agent_type.value)
                stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        log.info("agent_stopped", agent_type=self.agent_type.value, handled=self.handled)

    def run_one(
        self,
        task: Task,
        stop: threading.Event | None = None,
        *,
        before_publish: Callable[[], None] | None = None,
    ) -> ResultEvent:
        """Handle one task and publish its result (what a queue worker calls per job).

        ``before_publish`` runs between the two: a queue worker ends the job's time limit
        there, since the limit bounds the work on the host, never the delivery of its result.
        """
        result = self.handle(task)
        if before_publish is not None:
            before_publish()
        self.publish(result, stop)
        self.handled += 1
        return result

    def publish(self, result: ResultEvent, stop: threading.Event | None = None) -> None:
        """Publish ``result``, retrying until it lands or ``stop`` is set.

        Retries back off up to every few seconds. A Redis outage of any length is thus
        ridden out: giving up would leave the task to its timeout, and a timed-out reap is
        retried without the record of the kills it made. Only an error no retry can fix (the
        bus refusing the event itself: ValueError, TypeError) or ``stop`` loses it.
        """
        self._publish(result, stop or threading.Event())

    def _publish(self, result: ResultEvent, stop: threading.Event) -> None:
        delay = _BACKOFF_FIRST
        attempt = 0
        while True:
            attempt += 1
            try:
                self.bus.publish(result)
            except (ValueError, TypeError):
                log.exception("result_refused_by_bus", task_id=result.task_id)
                break
            except Exception as err:  # noqa: BLE001 - transient (a restart): retried
                log.warning(
                    "result_publish_failed",
                    task_id=result.task_id,
                    attempt=attempt,
                    retry_in=delay,
                    error=f"{type(err).__name__}: {err}",
                )
            else:
                if attempt > 1:
                    log.info("result_published", task_id=result.task_id, attempts=attempt)
                return
            if stop.wait(delay):
                break
            delay = min(delay * 2, _PUBLISH_BACKOFF_MAX)
        log.error(
            "result_lost", task_id=result.task_id, mission_id=result.mission_id, attempts=attempt
        )

    def handle(self, task: Task) -> ResultEvent:
        with bound_contextvars(
            mission_id=task.mission_id, task_id=task.task_id, host_id=task.host_id
        ):
            try:
                self._admit(task)
                handler = self._handlers.get(task.action)
                if handler is None:
                    raise UnknownActionError(f"no handler for action '{task.action}'")
                with self.transports.open(task.target) as transport:
                    result = handler(task, transport)
                log.info("task_done", action=task.action.value, status=result.status.value)
                return result
            except AgentError as err:
                log.warning(
                    "task_failed",
                    action=task.action.value,
                    error_code=err.error_code,
                    error=str(err),
                )
                return ResultEvent.for_task(
                    task,
                    ResultStatus.ERROR,
                    summary=str(err),
                    error_code=err.error_code,
                    retriable=err.retriable,
                    ts=self.clock.now(),
                )
            except Exception as err:
                log.exception("task_crashed", action=task.action.value)
                return ResultEvent.for_task(
                    task,
                    ResultStatus.ERROR,
                    summary=f"{type(err).__name__}: {err}",
                    stderr_tail=repr(err),
                    error_code="INTERNAL_ERROR",
                    retriable=False,
                    ts=self.clock.now(),
                )

    def _admit(self, task: Task) -> None:
        if task.agent_type is not self.agent_type:
            raise TaskRefusedError(
                f"task for {task.agent_type} reached {self.agent_type}", error_code="WRONG_AGENT"
            )
        if task.target.os is not self.agent_type.os:
            raise TaskRefusedError(
                f"{self.agent_type} cannot handle a {task.target.os} host", error_code="WRONG_AGENT"
            )
        if task.is_expired(self.clock.now()):
            # A stale kill must never fire late; the engine decides whether to retry.
            raise TaskRefusedError(
                f"deadline {task.deadline.isoformat()} has passed",
                error_code="DEADLINE_EXCEEDED",
                retriable=True,
            )

    # -- actions ----------------------------------------------------------------------------

    def discover(self, task: Task, transport: Transport) -> ResultEvent:
        facts = transport.facts()
        summary = (
            f"{facts.hostname}: {facts.os_version or facts.os}, {facts.process_count} processes"
        )
        return self._success(task, summary, facts.model_dump(mode="json"))

    def scan(self, task: Task, transport: Transport) -> ResultEvent:
        look = self.look(transport, host_id=task.host_id)
        data = ScanData(
            processes_scanned=len(look.listing.processes),
            findings=tuple(look.findings),
            skipped=dict(look.listing.skipped),
        )
        protected = sum(1 for f in look.findings if not f.killable)
        summary = f"{len(look.listing.processes)} processes, {len(look.findings)} finding(s)"
        if protected:
            summary += f" ({protected} not killable)"
        return self._success(task, summary, data.model_dump(mode="json"))

    def reap(self, task: Task, transport: Transport) -> ResultEvent:
        params = _params(ReapParams, task)
        # Kill only what is approved AND still selected by a rule now: state may have changed.
        look = self.look(transport, host_id=task.host_id)
        current = {f.identity.pid: f for f in look.findings}
        terminator = Terminator(
            transport,
            look.policy,
            clock=self.clock,
            audit=self.audit,
            mission_id=task.mission_id,
            task_id=task.task_id,
            config_file=self.config_file,
            deadline=task.deadline,
        )
        budget = params.max_kills
        kills: list[KillRecord] = []
        not_matching = []
        unfinished = False
        for identity in params.approved:
            if task.is_expired(self.clock.now()):
                log.warning("reap_deadline_reached")
                unfinished = True
                break
            finding = current.get(identity.pid)
            if finding is None or not identity.same_process(
                finding.identity.pid, finding.identity.create_time
            ):
                not_matching.append(identity)
                continue
            action = self._rules[finding.rule].action
            try:
                records = terminator.terminate_scope(
                    finding,
                    action,
                    dry_run=task.dry_run,
                    processes=look.listing.processes,
                    budget=budget,
                )
            except Exception as err:
                log.exception("reap_attempt_failed", pid=identity.pid)
                records = [
                    terminator.failed(
                        finding, action, dry_run=task.dry_run, detail=f"{type(err).__name__}: {err}"
                    )
                ]
            kills.extend(records)
            if budget is not None:
                budget -= sum(1 for r in records if r.outcome.uses_budget)
        data = ReapData(kills=tuple(kills), not_matching=tuple(not_matching))
        failed = [k for k in kills if k.outcome in (KillOutcome.FAILED, KillOutcome.DENIED)]
        status = ResultStatus.PARTIAL if failed or unfinished else ResultStatus.SUCCESS
        return self._success(
            task, _reap_summary(kills, not_matching), data.model_dump(mode="json"), status=status
        )

    def verify(self, task: Task, transport: Transport) -> ResultEvent:
        expected = _params(VerifyParams, task).expected_gone
        look = self.look(transport, host_id=task.host_id)
        # A zombie has exited; only its parent's wait() is missing. It counts as gone.
        running = [p for p in look.listing.processes if p.status is not ProcessState.ZOMBIE]
        alive = [i for i in expected if any(i.same_process(p.pid, p.create_time) for p in running)]
        data = VerifyData(
            still_alive=tuple(alive),
            findings=tuple(look.findings),
            processes_scanned=len(look.listing.processes),
        )
        summary = f"{len(expected) - len(alive)}/{len(expected)} gone"
        status = ResultStatus.PARTIAL if alive else ResultStatus.SUCCESS
        return self._success(task, summary, data.model_dump(mode="json"), status=status)

    def look(self, transport: Transport, *, host_id: str) -> _Look:
        """List the host's processes once; judge them with the policy for that same table.

        What every action starts with, and what a one-shot CLI scan or ``explain`` uses."""
        listing = transport.list_processes()
        policy = policy_for(self.safety, transport.vantage(), listing.processes)
        findings = self.detector.evaluate(
            listing.processes, now=self.clock.now(), host_id=host_id, policy=policy
        )
        return _Look(listing, policy, findings)

    def _success(
        self,
        task: Task,
        summary: str,
        data: dict[str, object],
        status: ResultStatus = ResultStatus.SUCCESS,
    ) -> ResultEvent:
        return ResultEvent.for_task(task, status, summary=summary, data=data, ts=self.clock.now())


P = TypeVar("P", bound=BaseModel)


def _params(model: type[P], task: Task) -> P:
    try:
        return model.model_validate(task.params)
    except ValidationError as err:
        raise TaskRefusedError(
            f"invalid {task.action.value} params: {err.error_count()} error(s), "
            f"first: {err.errors()[0]['msg']}",
            error_code="BAD_PARAMS",
        ) from err


def _reap_summary(kills: Sequence[KillRecord], not_matching: Sequence[object]) -> str:
    counts: dict[str, int] = {}
    for kill in kills:
        counts[kill.outcome.value] = counts.get(kill.outcome.value, 0) + 1
    if not_matching:
        counts["no_longer_matching"] = len(not_matching)
    return ", ".join(f"{n} {what}" for what, n in counts.items()) or "nothing to do"
