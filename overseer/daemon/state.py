"""The daemon's persisted state: what ``reaper status`` and ``reaper metrics`` read.

One JSON document, rewritten after every scan, health check and reload. Writes are atomic
(a temporary file in the same directory, fsync, ``os.replace``), so a reader — or a daemon
killed mid-write — sees the old document or the new one, never half of one. Totals (kills,
CPU recovered, protected skips, scan histogram) carry over a restart: they describe the
reaper on this machine, not one run of it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from infra.metrics import SCAN_DURATION_BUCKETS, MetricsSnapshot, bucket_index
from overseer.daemon.health import HealthResult
from overseer.daemon.resources import ResourceSnapshot
from reaper_engine.audit import AuditRecord

log = structlog.get_logger(__name__)

STATE_SCHEMA_VERSION = 1
RECENT_ACTIONS_KEPT = 20


class RecentAction(BaseModel):
    """One kill decision, as the status view lists it (from the audit record)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timestamp: AwareDatetime
    action: str  # kill | dry_run | refuse | skip (the audit record's)
    outcome: str
    pid: int
    command: str
    rule: str
    priority: str
    cpu_percent: float
    dry_run: bool
    signal: str | None = None
    detail: str = ""

    @classmethod
    def of(cls, record: AuditRecord) -> RecentAction:
        return cls(
            timestamp=record.timestamp,
            action=record.action,
            outcome=record.outcome,
            pid=record.pid,
            command=record.command,
            rule=record.rule,
            priority=record.priority,
            cpu_percent=record.cpu_percent,
            dry_run=record.dry_run,
            signal=record.signal,
            detail=record.detail,
        )


class DaemonState(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    schema_version: int = STATE_SCHEMA_VERSION
    pid: int | None = None
    running: bool = False
    started_at: AwareDatetime | None = None
    stopped_at: AwareDatetime | None = None
    host_id: str | None = None

    # configuration in use
    config_files: list[str] = Field(default_factory=list)
    dry_run: bool = False
    scan_interval_seconds: float = 60.0
    reloads: int = 0
    last_reload_at: AwareDatetime | None = None
    last_reload_error: str | None = None

    # the last scan
    last_scan_at: AwareDatetime | None = None
    last_scan_seconds: float | None = None
    last_mission_id: str | None = None
    last_mission_status: str | None = None
    last_error: str | None = None
    processes_monitored: int = 0
    rogue_by_priority: dict[str, int] = Field(default_factory=dict)

    # totals
    scans_total: int = 0
    killed_total: int = 0
    cpu_recovered_total: float = 0.0
    protected_skips: dict[str, int] = Field(default_factory=dict)
    scan_duration_buckets: list[int] = Field(
        default_factory=lambda: [0] * (len(SCAN_DURATION_BUCKETS) + 1)
    )
    scan_duration_sum: float = 0.0

    recent_actions: list[RecentAction] = Field(default_factory=list)
    health: dict[str, HealthResult] = Field(default_factory=dict)
    resources: ResourceSnapshot | None = None

    def observe_scan(self, seconds: float) -> None:
        buckets = list(self.scan_duration_buckets)
        buckets += [0] * (len(SCAN_DURATION_BUCKETS) + 1 - len(buckets))
        buckets[bucket_index(seconds)] += 1
        self.scan_duration_buckets = buckets
        self.scan_duration_sum += seconds
        self.scans_total += 1

    def remember(self, actions: list[RecentAction]) -> None:
        self.recent_actions = [*self.recent_actions, *actions][-RECENT_ACTIONS_KEPT:]

    def metrics(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            processes_monitored=self.processes_monitored,
            rogue_by_priority=dict(self.rogue_by_priority),
            killed_total=self.killed_total,
            cpu_recovered_total=self.cpu_recovered_total,
            scan_duration_buckets=tuple(self.scan_duration_buckets),
            scan_duration_count=self.scans_total,
            scan_duration_sum=self.scan_duration_sum,
            protected_skips=dict(self.protected_skips),
            health_up={name: r.ok for name, r in self.health.items()},
            last_scan_timestamp=self.last_scan_at.timestamp() if self.last_scan_at else None,
        )


def write_state(path: Path, state: DaemonState) -> None:
    """Replace ``path`` with ``state`` atomically (tmp file + fsync + rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = state.model_dump_json(indent=2).encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_state(path: Path) -> DaemonState | None:
    """The persisted state, or None if there is none or it cannot be read (logged)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        log.warning("state_invalid", path=str(path), error=f"not UTF-8: {exc.reason}")
        return None
    except OSError as exc:
        log.warning("state_unreadable", path=str(path), error=str(exc))
        return None
    try:
        state = DaemonState.model_validate_json(text)
    except ValidationError as exc:
        log.warning("state_invalid", path=str(path), error=str(exc).splitlines()[0])
        return None
    if state.schema_version > STATE_SCHEMA_VERSION:
        log.warning("state_too_new", path=str(path), schema_version=state.schema_version)
        return None
    return state
