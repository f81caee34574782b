"""Typed ``data`` of each action's ResultEvent; the engine validates them on receipt."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from reaper_engine.models.process import Finding, KillRecord, ProcessIdentity


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DiscoverData(_Payload):
    hostname: str
    os: str
    os_version: str = ""
    cpu_count: int = Field(default=1, ge=1)
    process_count: int = Field(default=0, ge=0)
    boot_time: float | None = None
    agent_user: str | None = None


class ScanData(_Payload):
    processes_scanned: int = Field(ge=0)
    findings: tuple[Finding, ...] = ()
    skipped: dict[str, int] = Field(default_factory=dict)  # reason -> count
    scan_seconds: float = 0.0


class ReapParams(_Payload):
    """What a reap task may touch: only these identities, and only if they still match.

    ``max_kills`` is the host's remaining kill budget: processes signalled (or rehearsed),
    group and tree members included, never exceed it.
    """

    approved: tuple[ProcessIdentity, ...]
    max_kills: int | None = Field(default=None, ge=0)


class ReapData(_Payload):
    kills: tuple[KillRecord, ...] = ()
    not_matching: tuple[ProcessIdentity, ...] = ()  # approved but no longer selected by a rule


class VerifyParams(_Payload):
    expected_gone: tuple[ProcessIdentity, ...] = ()


class VerifyData(_Payload):
    still_alive: tuple[ProcessIdentity, ...] = ()
    findings: tuple[Finding, ...] = ()
    processes_scanned: int = Field(default=0, ge=0)
