"""Pydantic models shared by every process: JSON round-trippable, schema-versioned."""

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
