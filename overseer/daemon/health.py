"""Seed 001's health-check scheduler: ``[[health_checks]]`` commands on their own intervals.

Each check runs on a thread of its own, so a slow check never delays another or the scans.
A run is an argv (never a shell), in a session of its own, with stdin closed and output to a
temporary file (only the tail is kept, and no pipe can fill up and stall the check). When the
timeout passes — or the daemon stops — the check's whole process group is killed: it is our
own child, started by this module a moment ago and not yet reaped, so its PID, and the group
it leads, cannot belong to anyone else. That is the same thing ``subprocess.run(timeout=)``
does, and why it does not go through the terminator (which is for processes rules selected).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import IO

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict

from reaper_engine.config import HealthCheck

log = structlog.get_logger(__name__)

OUTPUT_TAIL_BYTES = 2000


class HealthResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ok: bool
    started_at: AwareDatetime
    duration_seconds: float
    exit_code: int | None = None
    timed_out: bool = False
    error: str | None = None  # could not start it at all (no such program ...)
    output_tail: str = ""


class _Running:
    """The child of one check run, so that a stop can kill it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped = False

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        """Register a started check; one started as (or after) the scheduler stopped is
        killed at once -- decided under the lock ``kill_all`` takes, so none slips between."""
        with self._lock:
            if not self._stopped:
                self._procs[name] = proc
                return
            _kill_group(proc)

    def remove(self, name: str) -> None:
        with self._lock:
            self._procs.pop(name, None)

    def kill_all(self) -> None:
        with self._lock:
            self._stopped = True
            procs = list(self._procs.values())
        for proc in procs:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # Only while the child is unreaped (returncode None) is its PID -- and the group it leads,
    # thanks to start_new_session -- guaranteed to still be ours.
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if sys.platform == "win32":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGKILL)


def run_check(
    check: HealthCheck,
    *,
    running: _Running | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> HealthResult:
    """Run ``check`` once, enforcing its timeout; never raises for the check's own failure."""
    started_at = datetime.now(UTC)
    began = clock()
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                list(check.command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            return HealthResult(
                name=check.name,
                ok=False,
                started_at=started_at,
                duration_seconds=clock() - began,
                error=f"cannot run {check.command[0]!r}: {exc.strerror or exc}",
            )
        if running is not None:
            running.add(check.name, proc)
        timed_out = False
        try:
            proc.wait(timeout=check.timeout_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        finally:
            if running is not None:
                running.remove(check.name)
        tail = _tail(out)
    code = proc.returncode
    return HealthResult(
        name=check.name,
        ok=not timed_out and code == 0,
        started_at=started_at,
        duration_seconds=round(clock() - began, 3),
        exit_code=None if timed_out else code,
        timed_out=timed_out,
        output_tail=tail,
    )


def _tail(out: IO[bytes]) -> str:
    size = out.seek(0, os.SEEK_END)
    out.seek(max(0, size - OUTPUT_TAIL_BYTES))
    return out.read().decode("utf-8", errors="replace")


class HealthScheduler:
    """Runs each check every ``interval_seconds`` (start to start) until stopped."""

    def __init__(
        self,
        checks: Sequence[HealthCheck],
        on_result: Callable[[HealthResult], None],
    ) -> None:
        self.checks = tuple(checks)
        self._on_result = on_result
        self._stop = threading.Event()
        self._running = _Running()
        self._threads: list[threading.Thread] = []

    def start(self) -> HealthScheduler:
        for check in self.checks:
            thread = threading.Thread(
                target=self._loop, args=(check,), name=f"health-{check.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._running.kill_all()  # a check in progress ends now, not at its timeout
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self, check: HealthCheck) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            result = run_check(check, running=self._running)
            if self._stop.is_set():
                return  # killed by stop(): not a real failure, do not report it
            _log_result(result)
            try:
                self._on_result(result)
            except Exception:
                log.exception("health_check_report_failed", name=check.name)
            self._stop.wait(max(0.0, check.interval_seconds - (time.monotonic() - began)))


def _log_result(result: HealthResult) -> None:
    fields = {
        "name": result.name,
        "duration_seconds": result.duration_seconds,
        "exit_code": result.exit_code,
    }
    if result.ok:
        log.info("health_check_passed", **fields)
    elif result.timed_out:
        log.warning("health_check_timed_out", **fields, output_tail=result.output_tail[-500:])
    else:
        log.warning(
            "health_check_failed",
            **fields,
            error=result.error,
            output_tail=result.output_tail[-500:],
        )
