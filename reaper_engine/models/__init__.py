"""Pydantic models shared by every process: JSON round-trippable, schema-versioned.

Names are imported from their modules on first use (PEP 562), so a process that needs only
``ProcessInfo`` and ``Finding`` (a one-shot ``reaper scan``) does not build the mission and
inventory models (~15 ms of its start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reaper_engine.lazy import lazy_exports

if TYPE_CHECKING:
    from reaper_engine.models.enums import (
        OS,
        Action,
        AgentType,
        HostStatus,
        KillOutcome,
        MissionKind,
        MissionStatus,
        Priority,
        ProcessState,
        ResultStatus,
        TransportKind,
    )
    from reaper_engine.models.inventory import HostSpec, Inventory
    from reaper_engine.models.mission import (
        HostOutcome,
        HostState,
        MissionCounters,
        MissionOptions,
        MissionState,
        MissionSummary,
        PendingTask,
        TaskRecord,
    )
    from reaper_engine.models.payloads import (
        DiscoverData,
        ReapData,
        ReapParams,
        ScanData,
        VerifyData,
        VerifyParams,
    )
    from reaper_engine.models.process import Finding, KillRecord, ProcessIdentity, ProcessInfo
    from reaper_engine.models.task import ResultEvent, Task

_MODULES: dict[str, str] = {
    "Action": "enums",
    "AgentType": "enums",
    "DiscoverData": "payloads",
    "Finding": "process",
    "HostOutcome": "mission",
    "HostSpec": "inventory",
    "HostState": "mission",
    "HostStatus": "enums",
    "Inventory": "inventory",
    "KillOutcome": "enums",
    "KillRecord": "process",
    "MissionCounters": "mission",
    "MissionKind": "enums",
    "MissionOptions": "mission",
    "MissionState": "mission",
    "MissionStatus": "enums",
    "MissionSummary": "mission",
    "OS": "enums",
    "PendingTask": "mission",
    "Priority": "enums",
    "ProcessIdentity": "process",
    "ProcessInfo": "process",
    "ProcessState": "enums",
    "ReapData": "payloads",
    "ReapParams": "payloads",
    "ResultEvent": "task",
    "ResultStatus": "enums",
    "ScanData": "payloads",
    "Task": "task",
    "TaskRecord": "mission",
    "TransportKind": "enums",
    "VerifyData": "payloads",
    "VerifyParams": "payloads",
}

__all__ = [
    "OS",
    "Action",
    "AgentType",
    "DiscoverData",
    "Finding",
    "HostOutcome",
    "HostSpec",
    "HostState",
    "HostStatus",
    "Inventory",
    "KillOutcome",
    "KillRecord",
    "MissionCounters",
    "MissionKind",
    "MissionOptions",
    "MissionState",
    "MissionStatus",
    "MissionSummary",
    "PendingTask",
    "Priority",
    "ProcessIdentity",
    "ProcessInfo",
    "ProcessState",
    "ReapData",
    "ReapParams",
    "ResultEvent",
    "ResultStatus",
    "ScanData",
    "Task",
    "TaskRecord",
    "TransportKind",
    "VerifyData",
    "VerifyParams",
]


if not TYPE_CHECKING:  # for mypy, the imports above are the package's names
    __getattr__, __dir__ = lazy_exports(__name__, _MODULES, globals())
