"""The floor under the engine's rate: the JSON work its models take per result, no engine.

Whatever the engine does with a result, it decodes the event, validates its data, writes
the host the result changed and the task's record, and for a discover result writes the scan
task it dispatches: stored as pending, sealed into its envelope, compressed into RQ's job.
``SerialisationFloor`` does exactly that pydantic, json and zlib work over the same events
as the engine runs, with the objects built beforehand (untimed), so its rate is the most a
synchronous engine could reach with these models if everything else were free.
``RedisCpu`` adds what the Redis server itself spends per result while the engine waits.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from pydantic import BaseModel

from infra.redis.rq_jobs import ZLIB_LEVEL
from reaper_engine.clock import utcnow
from reaper_engine.models import (
    Action,
    DiscoverData,
    HostSpec,
    HostState,
    PendingTask,
    ResultEvent,
    ResultStatus,
    ScanData,
    TaskRecord,
)
from reaper_engine.signing import TaskSigner

from .missions import bench_task, results_for

FLOOR = "floor: the models' JSON work alone, no engine (decode, validate, encode, seal, zlib)"


@dataclass
class _Phase:
    payloads: list[str]  # the events as the stream holds them
    hosts: list[HostState]  # each result's host as the engine leaves it
    records: list[TaskRecord]
    follow_ups: list[PendingTask]  # the scans the discover results dispatch


@dataclass
class SerialisationFloor:
    """Seconds per phase (discover, scan) of the models' JSON work for ``specs``' results."""

    specs: Sequence[HostSpec]
    templates: dict[tuple[str, Action], ResultEvent]
    signer: TaskSigner

    def __post_init__(self) -> None:
        now = utcnow()
        hosts = {spec.host_id: HostState.from_spec(spec) for spec in self.specs}
        self._phases: dict[str, _Phase] = {}
        for action in (Action.DISCOVER, Action.SCAN):
            tasks = [bench_task(spec, action, "bench-floor") for spec in self.specs]
            events = results_for(tasks, self.templates)
            for event in events:
                host = hosts[event.host_id]
                if action is Action.DISCOVER:
                    host.facts = DiscoverData.model_validate(event.data).model_dump(mode="json")
                else:
                    host.findings = ScanData.model_validate(event.data).findings
            follow_ups = [
                PendingTask(task=bench_task(spec, Action.SCAN, "bench-floor"), dispatched_at=now)
                for spec in self.specs
                if action is Action.DISCOVER
            ]
            self._phases[action.value] = _Phase(
                payloads=[event.model_dump_json() for event in events],
                hosts=[hosts[event.host_id].model_copy(deep=True) for event in events],
                records=[
                    TaskRecord(
                        task_id=task.task_id,
                        host_id=task.host_id,
                        action=task.action,
                        attempt=task.attempt,
                        status=ResultStatus.SUCCESS,
                        finished_at=now,
                    )
                    for task in tasks
                ],
                follow_ups=follow_ups,
            )

    def __call__(self) -> dict[str, float]:
        parts: dict[str, float] = {}
        payload_models: dict[Action, type[BaseModel]] = {
            Action.DISCOVER: DiscoverData,
            Action.SCAN: ScanData,
        }
        for name, phase in self._phases.items():
            start = time.perf_counter()
            for raw in phase.payloads:
                event = ResultEvent.model_validate_json(raw)
                payload_models[event.action].model_validate(event.data)
            for host in phase.hosts:
                host.model_dump_json()
            for record in phase.records:
                record.model_dump_json()
            for pending in phase.follow_ups:
                pending.model_dump_json()
                sealed = self.signer.seal(pending.task)
                zlib.compress(json.dumps([sealed]).encode(), ZLIB_LEVEL)
            parts[name] = time.perf_counter() - start
        return parts


class RedisCpu:
    """The Redis server's CPU time (user + system, all its threads) between ``start`` and
    ``stop``, from INFO CPU: what it spent on the engine's commands while the engine waited."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._started: float | None = None
        self.seconds = 0.0

    def _now(self) -> float:
        info = self._client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        if self._started is not None:
            self.seconds += self._now() - self._started
            self._started = None
