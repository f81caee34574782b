"""Builders for test data: small, explicit, with sensible defaults."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from reaper_engine.clock import ManualClock
from reaper_engine.models import (
    OS,
    Action,
    HostSpec,
    HostState,
    MissionKind,
    MissionOptions,
    MissionState,
    ProcessInfo,
    ProcessState,
    ResultEvent,
    ResultStatus,
    Task,
    TaskRecord,
    TransportKind,
)

T0 = datetime.fromisoformat("2025-10-31T13:00:00+00:00")


def clock() -> ManualClock:
    return ManualClock(T0)


def host_spec(host_id: str = "h1", os: OS = OS.LINUX, **kw: Any) -> HostSpec:
    kw.setdefault("transport", TransportKind.SIMULATED)
    kw.setdefault("user", "noah")
    return HostSpec(host_id=host_id, os=os, **kw)


def make_task(
    action: Action = Action.SCAN,
    *,
    host: HostSpec | None = None,
    mission_id: str = "m1",
    task_id: str = "t1",
    now: datetime = T0,
    timeout: float = 60.0,
    **kw: Any,
) -> Task:
    host = host or host_spec()
    return Task(
        task_id=task_id,
        mission_id=mission_id,
        host_id=host.host_id,
        agent_type=host.agent_type,
        action=action,
        created_at=now,
        deadline=now + timedelta(seconds=timeout),
        target=host,
        **kw,
    )


def make_record(
    task_id: str = "t1",
    host_id: str = "h1",
    action: Action = Action.SCAN,
    *,
    status: ResultStatus = ResultStatus.SUCCESS,
    finished_at: datetime = T0,
    **kw: Any,
) -> TaskRecord:
    """A completed task's record, first attempt unless told."""
    kw.setdefault("attempt", 1)
    return TaskRecord(
        task_id=task_id,
        host_id=host_id,
        action=action,
        status=status,
        finished_at=finished_at,
        **kw,
    )


def with_history(p: ProcessInfo, seconds: float, *, used: float = 0.0) -> ProcessInfo:
    """``p`` with scan history, as the daemon's repeated looks build it: one look ``seconds``
    before this one, and ``used`` CPU seconds spent since. What ``idle_seconds`` and
    ``duration_seconds`` are measured over; with a single look (a one-shot scan) the detector
    falls back to the process's lifetime (docs/configuration.md)."""
    now = T0.timestamp()
    samples = ((now - seconds, p.cpu_time - used), (now, p.cpu_time))
    return p.model_copy(update={"cpu_samples": samples})


def result_for(task: Task, status: ResultStatus = ResultStatus.SUCCESS, **kw: Any) -> ResultEvent:
    return ResultEvent.for_task(task, status, **kw)


def make_state(
    *hosts: HostSpec,
    mission_id: str = "m1",
    kind: MissionKind = MissionKind.REAP,
    options: MissionOptions | None = None,
) -> MissionState:
    hosts = hosts or (host_spec(),)
    return MissionState(
        mission_id=mission_id,
        kind=kind,
        options=options or MissionOptions(),
        hosts={h.host_id: HostState.from_spec(h) for h in hosts},
    )


def proc(
    pid: int = 4242,
    *,
    cmd: str = "/tmp/test_loop",
    age: float = 3600.0,
    cpu: float = 0.0,
    user: str = "noah",
    uid: int | None = 1000,
    now: datetime = T0,
    cpu_time: float | None = None,
    rss_mb: float = 10.0,
    status: ProcessState = ProcessState.SLEEPING,
    **kw: Any,
) -> ProcessInfo:
    """A process of ``age`` seconds at ``now``; cpu_time defaults to a steady ``cpu`` load."""
    argv = tuple(cmd.split())
    return ProcessInfo(
        pid=pid,
        ppid=kw.pop("ppid", 1),
        uid=uid,
        user=user,
        name=kw.pop("name", argv[0].rsplit("/", 1)[-1][:15] if argv else ""),
        cmdline=argv,
        create_time=now.timestamp() - age,
        status=status,
        cpu_percent=cpu,
        cpu_time=cpu_time if cpu_time is not None else age * cpu / 100,
        rss=int(rss_mb * 1024 * 1024),
        **kw,
    )
