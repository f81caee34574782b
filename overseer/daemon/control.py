"""Controlling a daemon from outside: start it detached, find it, stop it.

``signal_our_daemon`` is where Reaper signals its own daemon; besides the terminator, the
only other signals are the daemon's to its own health-check children (``health.py``).
The terminator is the path for processes that *rules* selected, with protections that would
(rightly) refuse this one: it is our own process, in our own session. Stopping our own daemon
is an operator's explicit request about a process the PID file says we started, so it is
allowed here — but only after proving that the PID still belongs to that daemon: the PID file
must be ours (owned by this user, not writable by group or others), a live daemon must hold
its lock, the start time recorded in it must match the live process's, the process must be
ours (same user) and its command line must have the exact shape of a foreground daemon's
(:func:`is_daemon_cmdline`). A PID file left behind by a crash whose PID now names another
program is never acted on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog

from overseer.daemon.pidfile import (
    PidRecord,
    guarded,
    is_alive,
    lock_is_held,
    pid_file_owner_problem,
    read_record,
)
from reaper_engine.models.process import START_TIME_TOLERANCE

log = structlog.get_logger(__name__)

DAEMON_MODULE = "overseer.daemon"
_DAEMON_MODULES = (DAEMON_MODULE, "overseer.cli")
NOT_RUNNING = "Reaper daemon is not running"


@dataclass(frozen=True, slots=True)
class StopResult:
    stopped: bool
    pid: int | None
    message: str


def daemon_command(
    config: Path | None,
    *,
    log_format: str = "json",
    extra: Sequence[str] = (),
    dry_run: bool = False,
) -> list[str]:
    """The argv of a foreground daemon, as ``reaper start`` spawns it (``extra``: more
    options of the ``overseer.daemon`` group, such as ``--log-level``)."""
    argv = [
        sys.executable,
        "-m",
        DAEMON_MODULE,
        "--log-format",
        log_format,
        *extra,
        "start",
        "--foreground",
    ]
    if dry_run:
        argv.append("--dry-run")
    if config is not None:
        argv += ["--config", str(config)]
    return argv


def spawn_detached(
    argv: Sequence[str], *, log_file: Path, cwd: Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, detached from the terminal, logging to ``log_file``.

    A new session (no controlling terminal) and stdin from /dev/null: closing the terminal
    or pressing Ctrl-C in it must not reach the daemon. The working directory is kept, since
    the project ``.reaper.toml`` is found from it (and found again on every reload).
    """
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(fd)  # the child has its own copy


def is_daemon_cmdline(argv: Sequence[str]) -> bool:
    """True if ``argv`` has the shape of a foreground daemon's command line.

    ``<python> -m overseer.daemon|overseer.cli … start … --foreground``, the ``reaper``
    console script (``reaper …`` or ``<python> …/reaper …``) followed by ``start`` and then
    ``--foreground``. A word "reaper" somewhere else (an editor open on reaper.toml) is not one.
    """
    argv = list(argv)
    if not argv:
        return False
    rest: list[str] | None = None
    first = os.path.basename(argv[0])
    if first == "reaper":
        rest = argv[1:]
    elif first.startswith("python"):
        if len(argv) >= 3 and argv[1] == "-m" and argv[2] in _DAEMON_MODULES:
            rest = argv[3:]
        elif len(argv) >= 2 and os.path.basename(argv[1]) == "reaper":
            rest = argv[2:]
    if rest is None or "start" not in rest:
        return False
    return "--foreground" in rest[rest.index("start") + 1 :]


def _is_our_daemon(proc: psutil.Process, record: PidRecord) -> str | None:
    """None if ``proc`` is the daemon ``record`` describes, else why not."""
    try:
        if abs(proc.create_time() - record.start_time) > START_TIME_TOLERANCE:
            return "its PID now belongs to another process (start time differs)"
        if hasattr(os, "getuid") and proc.uids().real != os.getuid():
            return "it belongs to another user"
        argv = proc.cmdline()
    except psutil.NoSuchProcess:
        return "it is not running"
    except psutil.AccessDenied:
        return "it cannot be inspected (another user's process)"
    if not is_daemon_cmdline(argv):
        return f"its command line is not a reaper daemon's ({' '.join(argv)[:80]!r})"
    return None


@dataclass(frozen=True, slots=True)
class Found:
    """What the PID file says, checked: ``proc`` set only for our verified, running daemon."""

    record: PidRecord | None
    proc: psutil.Process | None
    problem: str | None  # the PID file cannot be trusted: refuse, say why
    message: str  # for the operator when no daemon was found


def find_daemon(pid_file: Path) -> Found:
    """The running daemon ``pid_file`` names, verified as ours (see the module docstring)."""
    problem = pid_file_owner_problem(pid_file)
    if problem is not None:
        return Found(None, None, problem, problem)
    if not pid_file.parent.is_dir():
        # No daemon ever ran with this PID file (it makes the directory); a status or a stop
        # must not create it, and the lock file beside the PID file cannot exist.
        return Found(None, None, None, NOT_RUNNING)
    with guarded(pid_file):  # not between a starter creating the file and locking it
        record = read_record(pid_file)
        held = record is not None and lock_is_held(pid_file)
    if record is None:
        return Found(None, None, None, NOT_RUNNING)
    stale = f"{NOT_RUNNING} (stale PID file {pid_file})"
    if not held or not is_alive(record):
        return Found(record, None, None, stale)
    try:
        proc = psutil.Process(record.pid)
    except psutil.NoSuchProcess:
        return Found(record, None, None, stale)
    why_not = _is_our_daemon(proc, record)
    if why_not is not None:
        log.warning("daemon_not_ours", pid=record.pid, reason=why_not)
        return Found(record, None, f"PID {record.pid}: {why_not}", stale)
    return Found(record, proc, None, "")


def signal_our_daemon(
    pid_file: Path, sig: int = signal.SIGTERM, *, timeout: float = 30.0
) -> StopResult:
    """Send ``sig`` to the daemon named by ``pid_file`` — only if it is verifiably ours.

    Waits up to ``timeout`` for it to exit when ``sig`` stops it. The one signal Reaper
    sends outside the terminator: see the module docstring for why that is allowed.
    """
    found = find_daemon(pid_file)
    pid = found.record.pid if found.record else None
    if found.problem is not None:
        log.warning("daemon_stop_refused", pid=pid, reason=found.problem)
        return StopResult(False, pid, f"Refusing to signal: {found.problem}")
    if found.proc is None:
        return StopResult(False, pid, found.message)
    proc = found.proc
    try:
        # psutil re-checks that the PID still names the process it opened (its start time)
        # before signalling, which closes the window since our own check above.
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        return StopResult(True, pid, "Reaper daemon stopped")
    log.info("daemon_signalled", pid=pid, signal=signal.Signals(sig).name)
    if sig not in (signal.SIGTERM, signal.SIGINT):
        return StopResult(True, pid, f"Sent {signal.Signals(sig).name} to the daemon")
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        return StopResult(False, pid, f"Reaper daemon (PID {pid}) did not stop within {timeout:g}s")
    return StopResult(True, pid, "Reaper daemon stopped")


def wait_for_start(
    child: subprocess.Popen[bytes], pid_file: Path, *, timeout: float = 15.0
) -> PidRecord | None:
    """Wait until ``child`` holds the PID file (started) or exits (failed); None if it failed."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while time.monotonic() < deadline:
        record = read_record(pid_file)
        if record is not None and record.pid == child.pid:
            return record
        if child.poll() is not None:
            return None
        time.sleep(pause)  # another process's progress: nothing to block on but the file
        pause = min(pause * 2, 0.2)
    return None
