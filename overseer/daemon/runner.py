"""The watch loop: one reap mission over this machine every ``daemon.scan_interval_seconds``.

Threads and signals:

* The **main thread** owns signals. Handlers are installed with ``signal.signal`` but do no
  work: ``signal.set_wakeup_fd`` writes each signal's number to a socket pair, and the main
  thread blocks reading it. So a signal is handled in ordinary code — never inside a handler,
  where taking a lock the interrupted code holds (an ``Event.set``, a logger) can deadlock.
  SIGHUP reloads the configuration; SIGTERM and SIGINT stop the daemon.
* The **worker** (``reaper-watch``) runs the scans: it applies a configuration the main thread
  has validated, runs one mission through the in-memory fleet, waits for it with
  ``OverseerService.wait_for``, records the outcome, then waits on an Event for the interval,
  so a stop or a reload wakes it at once.
* Health checks run on threads of their own (``health.py``); the metrics endpoint on another.

The mission is ``reap`` (discover, scan, reap, verify), rehearsed when ``daemon.dry_run`` is
set: the engine then copies dry_run onto every task, the terminator signals nothing and the
audit log says ``dry_run``. An ``audit`` mission would never even decide what to kill, so a
dry-run daemon could not show what it *would* have done.

The local transport factory is created once for the daemon's whole life: it keeps the CPU
history that sustained-load and idle rules need (``duration_seconds``, ``idle_seconds``) and
the baseline of scope ``baseline``. The fleet (store, queue, bus, agents) is rebuilt when the
rules or safety settings change, and every ``_FLEET_RECYCLE_AFTER`` missions, because the
in-memory store keeps every mission it ever saw.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from agents.platform.priority import BoostResult, CpuShareBooster, restore_cpu_share
from agents.transports.local import LocalTransportFactory, this_os
from infra.audit_log import JsonLinesAuditSink
from infra.config_files import LoadedConfig, load_config
from infra.metrics import MetricsServer, MetricsSnapshot
from infra.notify import Notifier
from infra.notify import notify as send_notification
from overseer.bootstrap import Fleet, in_memory_fleet
from overseer.daemon.health import HealthResult, HealthScheduler
from overseer.daemon.paths import DaemonPaths
from overseer.daemon.pidfile import PidFile
from overseer.daemon.resources import prime_resources, sample_resources
from overseer.daemon.state import DaemonState, RecentAction, read_state, write_state
from reaper_engine.audit import AuditRecord
from reaper_engine.config import ReaperConfig
from reaper_engine.engine import EngineNotice
from reaper_engine.errors import ConfigError
from reaper_engine.models import (
    HostSpec,
    KillOutcome,
    MissionKind,
    MissionOptions,
    MissionState,
    TransportKind,
)

log = structlog.get_logger(__name__)

NotifyFn = Callable[..., bool]

_FLEET_RECYCLE_AFTER = 100
_MISSION_TASK_TIMEOUT = 60.0
# discover, scan, reap, verify, each up to its task timeout, plus retries' backoff: a mission
# that takes longer than this is stuck and is cancelled so the next scan can run.
_MISSION_TIMEOUT = 5 * _MISSION_TASK_TIMEOUT
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_HOST_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def local_host_spec() -> HostSpec:
    """This machine as a one-host inventory: host id from the hostname, made a valid id."""
    name = _HOST_ID_CHARS.sub("-", socket.gethostname()).strip(".-_")[:63] or "localhost"
    return HostSpec(host_id=name, os=this_os(), transport=TransportKind.LOCAL)


class _RecordingSink:
    """The JSON-lines audit sink, plus a copy of this mission's records for the status view."""

    def __init__(self, inner: JsonLinesAuditSink) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._records: list[AuditRecord] = []

    def record(self, entry: AuditRecord) -> None:
        self.inner.record(entry)
        with self._lock:
            self._records.append(entry)

    def drain(self) -> list[AuditRecord]:
        with self._lock:
            records, self._records = self._records, []
        return records


@dataclass
class _Current:
    fleet: Fleet
    mission_id: str | None = None


def _protection_label(detail: str) -> str:
    """A low-cardinality label: ``whitelisted:code`` -> ``whitelisted``."""
    if detail.startswith("rule '"):
        return "report_only"
    return re.split(r"[:\s]", detail, maxsplit=1)[0] or "other"


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        explicit: Path | None,
        cwd: Path,
        env: Mapping[str, str],
        notify: NotifyFn | None = None,
        boost: bool = True,
        dry_run: bool = False,
    ) -> None:
        self.rehearse = dry_run  # `reaper start --dry-run`: wins over every file, reloads too
        loaded = rehearsed(loaded) if dry_run else loaded
        self.loaded = loaded
        self.explicit = explicit
        self.cwd = cwd
        self.env = dict(env)
        self.paths = DaemonPaths.resolve(loaded.config.daemon, env)
        self._notify: NotifyFn = notify or send_notification
        self._boost = boost and loaded.config.scanner.boost_cpu_share  # read at start
        self.host = local_host_spec()

        self._stop = threading.Event()
        self._wake = threading.Event()  # the worker: scan now (a reload, a stop)
        self._pending: LoadedConfig | None = None
        self._pending_lock = threading.Lock()
        self._current_lock = threading.Lock()
        self._current: _Current | None = None
        self._state_lock = threading.Lock()
        self.state = DaemonState()

        self._transports: LocalTransportFactory | None = None
        self._sink: _RecordingSink | None = None
        self._health: HealthScheduler | None = None
        self._metrics: MetricsServer | None = None
        self._missions_on_fleet = 0
        self._worker: threading.Thread | None = None
        self._worker_died = False
        self._rsock: socket.socket | None = None
        self._wsock: socket.socket | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; raises DaemonAlreadyRunningError before doing anything."""
        pidfile = PidFile(self.paths.pid_file)
        pidfile.acquire()
        restore: Callable[[], None] | None = None
        boosted: BoostResult | None = None
        try:
            # Handlers first: a SIGTERM during start-up must still clean up (PID file ...).
            restore = self._install_signals()
            if self._boost:
                # Before any thread exists: on Linux threads inherit the nice value.
                boosted = boost_cpu_share()
            self._start()
            self._serve_signals()
        finally:
            try:
                self._shutdown()
            finally:
                if restore is not None:
                    restore()
                if boosted is not None:
                    # The session's autogroup outlives us: in the foreground that session is
                    # the user's terminal, which must not keep the daemon's boost.
                    restore_cpu_share(boosted)
                pidfile.release()
                log.info("daemon_stopped", pid=os.getpid())
        # Non-zero when the watch loop died, so that a service manager restarts the daemon.
        return 1 if self._worker_died else 0

    def _start(self) -> None:
        prime_resources()  # else the first status shows 0.0% CPU idle, a measured nothing
        config = self.loaded.config
        previous = read_state(self.paths.state_file)
        now = datetime.now(UTC)
        base = previous or DaemonState()
        self.state = base.model_copy(
            update={
                "pid": os.getpid(),
                "running": True,
                "started_at": now,
                "stopped_at": None,
                "host_id": self.host.host_id,
                "reloads": 0,
                "last_reload_at": None,
                "last_reload_error": None,
                "last_error": None,
            }
        )
        self._describe_config(self.loaded)
        self._save()
        # Created once: its CPU history is what makes "90% for 5 minutes" measurable. The
        # baseline (scope "baseline") is the daemon's start.
        self._transports = LocalTransportFactory.from_settings(
            config.scanner, capture_baseline=True
        )
        self._build_fleet(config)
        self._start_health(config)
        self._start_metrics(config)
        log.info(
            "daemon_started",
            pid=os.getpid(),
            host_id=self.host.host_id,
            interval=config.daemon.scan_interval_seconds,
            dry_run=config.daemon.dry_run,
            config_files=[str(p) for p in self.loaded.sources],
            pid_file=str(self.paths.pid_file),
            state_file=str(self.paths.state_file),
        )
        self._worker = threading.Thread(target=self._watch, name="reaper-watch", daemon=True)
        self._worker.start()

    def _install_signals(self) -> Callable[[], None]:
        rsock, wsock = socket.socketpair()
        wsock.setblocking(False)  # set_wakeup_fd requires it; a full buffer drops a byte
        self._rsock, self._wsock = rsock, wsock
        previous_fd = signal.set_wakeup_fd(wsock.fileno())
        previous = {sig: signal.signal(sig, _record_only) for sig in _handled_signals()}

        def restore() -> None:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in (rsock, wsock):
                sock.close()

        return restore

    def _serve_signals(self) -> None:
        assert self._rsock is not None
        while True:
            data = self._rsock.recv(64)
            if not data:
                return
            for signum in data:
                if signum == 0:  # the worker ended without being asked to: a failure
                    log.error("daemon_worker_died")
                    self._worker_died = True
                    return
                if signum in _STOP_SIGNALS:
                    log.info("daemon_stopping", signal=_signal_name(signum))
                    return
                if signum == getattr(signal, "SIGHUP", None):
                    log.info("daemon_reloading", signal="SIGHUP")
                    self.reload()

    def _shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._current_lock:
            current = self._current
        if current is not None and current.mission_id is not None:
            # Withdraw what the mission has not started; a kill in progress completes.
            with contextlib.suppress(Exception):
                current.fleet.overseer.cancel_mission(current.mission_id, "daemon stopping")
        if self._worker is not None:
            self._worker.join(_MISSION_TIMEOUT)
        if self._health is not None:
            self._health.stop()
        if self._metrics is not None:
            self._metrics.stop()
        with self._current_lock:
            if self._current is not None:
                self._current.fleet.close()
                self._current = None
        if self._transports is not None:
            self._transports.close()
        with self._state_lock:
            self.state.running = False
            self.state.stopped_at = datetime.now(UTC)
        self._save()

    # -- reload ------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load and validate the configuration again; keep the old one if it is invalid."""
        try:
            loaded = load_config(explicit=self.explicit, cwd=self.cwd, env=self.env)
            if self.rehearse:
                loaded = rehearsed(loaded)
        except (ConfigError, OSError) as exc:  # invalid, or unreadable: keep what runs
            log.error(
                "config_reload_failed", error=str(exc), kept=[str(p) for p in self.loaded.sources]
            )
            with self._state_lock:
                self.state.last_reload_error = str(exc)
                self.state.last_reload_at = datetime.now(UTC)
            self._save()
            return False
        if loaded.config.daemon.pid_file != self.loaded.config.daemon.pid_file:
            log.warning("pid_file_change_needs_restart", pid_file=str(self.paths.pid_file))
        if loaded.config.scanner != self.loaded.config.scanner:
            log.warning("scanner_change_needs_restart")
        with self._pending_lock:
            self._pending = loaded
        self._wake.set()
        return True

    def _apply_pending(self) -> None:
        with self._pending_lock:
            loaded, self._pending = self._pending, None
        if loaded is None:
            return
        old, new = self.loaded.config, loaded.config
        self.loaded = loaded
        if (old.rules, old.safety) != (new.rules, new.safety) or old.logging != new.logging:
            self._build_fleet(new)
        if old.health_checks != new.health_checks:
            if self._health is not None:
                self._health.stop()
            self._start_health(new)
        if old.metrics != new.metrics:
            if self._metrics is not None:
                self._metrics.stop()
                self._metrics = None
            self._start_metrics(new)
        with self._state_lock:
            self.state.reloads += 1
            self.state.last_reload_at = datetime.now(UTC)
            self.state.last_reload_error = None
        self._describe_config(loaded)
        self._save()
        log.info(
            "config_reloaded",
            config_files=[str(p) for p in loaded.sources],
            dry_run=new.daemon.dry_run,
            interval=new.daemon.scan_interval_seconds,
        )

    def _describe_config(self, loaded: LoadedConfig) -> None:
        with self._state_lock:
            self.state.config_files = [str(p) for p in loaded.sources]
            self.state.dry_run = loaded.config.daemon.dry_run
            self.state.scan_interval_seconds = loaded.config.daemon.scan_interval_seconds

    # -- the watch loop ----------------------------------------------------------------------

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                self._apply_pending()
                config = self.loaded.config
                if config.daemon.enabled:
                    try:
                        self.scan_once()
                    except Exception as exc:
                        log.exception("scan_failed")
                        with self._state_lock:
                            self.state.last_error = f"{type(exc).__name__}: {exc}"
                        self._save()
                else:
                    log.info("daemon_scans_disabled")
                self._wake.wait(config.daemon.scan_interval_seconds)
                self._wake.clear()
        except Exception:
            log.exception("watch_loop_crashed")
        finally:
            # Tell the main thread, which may be waiting for signals, that the worker ended.
            if not self._stop.is_set() and self._wsock is not None:
                with contextlib.suppress(OSError):
                    self._wsock.send(b"\x00")

    def scan_once(self) -> MissionState | None:
        """Run one mission over this host and record its outcome; None if stopped first."""
        config = self.loaded.config
        if self._missions_on_fleet >= _FLEET_RECYCLE_AFTER:
            self._build_fleet(config)
        with self._current_lock:
            current = self._current
            if current is None or self._stop.is_set():
                return None
            options = MissionOptions(
                dry_run=config.daemon.dry_run, task_timeout_seconds=_MISSION_TASK_TIMEOUT
            )
            began = time.monotonic()
            mission = current.fleet.overseer.create_mission(MissionKind.REAP, [self.host], options)
            current.mission_id = mission.mission_id
        self._missions_on_fleet += 1
        final = current.fleet.overseer.wait_for(mission.mission_id, _MISSION_TIMEOUT)
        if not final.status.is_terminal:
            log.warning("mission_stuck_cancelled", mission_id=mission.mission_id)
            final = current.fleet.overseer.cancel_mission(mission.mission_id, "scan timed out")
        elapsed = time.monotonic() - began
        with self._current_lock:
            current.mission_id = None
        records = self._sink.drain() if self._sink is not None else []
        self._record(final, records, elapsed, config)
        return final

    def _record(
        self,
        final: MissionState,
        records: list[AuditRecord],
        elapsed: float,
        config: ReaperConfig,
    ) -> None:
        host = final.hosts[self.host.host_id]
        by_priority: dict[str, int] = {}
        skips: dict[str, int] = {}
        for finding in host.findings:
            by_priority[finding.priority.value] = by_priority.get(finding.priority.value, 0) + 1
            if finding.protected_by is not None:
                label = _protection_label(finding.protected_by)
                skips[label] = skips.get(label, 0) + 1
        killed = [k for k in host.kills if k.outcome.is_kill and not k.dry_run]
        for kill in host.kills:
            if kill.outcome is KillOutcome.PROTECTED:
                label = _protection_label(kill.detail)
                skips[label] = skips.get(label, 0) + 1
        resources = sample_resources()
        with self._state_lock:
            st = self.state
            st.last_scan_at = datetime.now(UTC)
            st.last_scan_seconds = round(elapsed, 3)
            st.last_mission_id = final.mission_id
            st.last_mission_status = final.status.value
            st.last_error = None if final.status.value == "completed" else host.outcome_detail
            st.processes_monitored = int(host.facts.get("process_count", 0) or 0)
            st.rogue_by_priority = by_priority
            st.killed_total += len(killed)
            st.cpu_recovered_total = round(
                st.cpu_recovered_total + sum(k.cpu_percent for k in killed), 1
            )
            merged = dict(st.protected_skips)
            for label, count in skips.items():
                merged[label] = merged.get(label, 0) + count
            st.protected_skips = merged
            st.observe_scan(elapsed)
            st.remember([RecentAction.of(r) for r in records])
            st.resources = resources
        self._save()
        log.info(
            "scan_done",
            mission_id=final.mission_id,
            status=final.status.value,
            seconds=round(elapsed, 3),
            processes=self.state.processes_monitored,
            findings=len(host.findings),
            killed=len(killed),
            dry_run=config.daemon.dry_run,
        )
        if killed:
            self._notify_kills(records, config)

    def _notify_kills(self, records: list[AuditRecord], config: ReaperConfig) -> None:
        """One desktop notification per scan, for the rules that ask for one."""
        notify_rules = {r.name for r in config.rules if r.action.notify}
        try:
            Notifier(config.notifications, send=self._notify).kill_report(
                records, rules=notify_rules
            )
        except Exception:
            log.exception("notification_failed")

    # -- collaborators -----------------------------------------------------------------------

    def _build_fleet(self, config: ReaperConfig) -> None:
        assert self._transports is not None
        sink = _RecordingSink(
            JsonLinesAuditSink.from_settings(
                self.env,
                file=config.logging.file,
                max_size_mb=config.logging.max_size_mb,
                rotate_count=config.logging.rotate_count,
            )
        )
        fleet = in_memory_fleet(
            {TransportKind.LOCAL: self._transports},
            rules=config.rules,
            safety=config.safety,
            audit=sink,
            listener=_log_notice,
            threads_per_agent=1,
            agent_types={self.host.agent_type},  # this machine only: no idle mac/win agents
        )
        config_file = str(self.loaded.user_file) if self.loaded.user_file else None
        for agent in fleet.agents.agents:
            agent.config_file = config_file  # named in every audit record
        with self._current_lock:
            old, self._current = self._current, _Current(fleet)
            self._sink = sink
        self._missions_on_fleet = 0
        if old is not None:
            old.fleet.close()

    def _start_health(self, config: ReaperConfig) -> None:
        self._health = None
        if config.health_checks:
            self._health = HealthScheduler(config.health_checks, self._on_health).start()

    def _on_health(self, result: HealthResult) -> None:
        with self._state_lock:
            health = dict(self.state.health)
            health[result.name] = result
            # Forget checks no longer configured, so status and metrics show only live ones.
            names = {c.name for c in self.loaded.config.health_checks}
            self.state.health = {k: v for k, v in health.items() if k in names}
        self._save()

    def _start_metrics(self, config: ReaperConfig) -> None:
        if not config.metrics.enabled:
            return
        try:
            self._metrics = MetricsServer(
                self._metrics_snapshot, port=config.metrics.http_port, path=config.metrics.path
            ).start()
        except OSError as exc:
            # A busy port must not take the reaper down: it still protects the machine.
            log.error("metrics_unavailable", port=config.metrics.http_port, error=str(exc))

    def _metrics_snapshot(self) -> MetricsSnapshot:
        with self._state_lock:
            return self.state.metrics()

    def _save(self) -> None:
        with self._state_lock:
            try:
                write_state(self.paths.state_file, self.state)
            except OSError as exc:
                log.error("state_write_failed", path=str(self.paths.state_file), error=str(exc))


def controlling_terminal() -> str | None:
    """The terminal this process's session is attached to, or None (detached, a service)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except OSError:
        pass
    else:
        os.close(fd)
        return "/dev/tty"
    for std in (0, 1, 2):
        try:
            return os.ttyname(std)
        except (OSError, AttributeError):
            continue
    return None


def boost_cpu_share(
    *,
    nice: int = -10,
    terminal: Callable[[], str | None] = controlling_terminal,
    booster: CpuShareBooster | None = None,
) -> BoostResult:
    """Raise the daemon's CPU share; the session-wide part only when no terminal is attached.

    On Linux the autogroup nice applies to the daemon's whole *session*. A detached daemon
    or a service has a session of its own; a foreground daemon started from a terminal
    shares the user's shell session, and boosting it would boost everything run from that
    terminal. Then only the per-thread nice is applied.
    """
    booster = booster or CpuShareBooster()
    tty = terminal() if sys.platform.startswith("linux") else None
    if tty is None:
        return booster.boost(nice)
    reason = f"session has a controlling terminal ({tty}): its autogroup is the user's"
    log.info("cpu_boost_session_skipped", terminal=tty, reason=reason)
    return booster.boost(nice, skip_autogroup=reason)


def _record_only(signum: int, frame: object) -> None:
    """The Python-level handler: nothing; set_wakeup_fd already told the main thread."""


def _handled_signals() -> tuple[int, ...]:
    return (*_STOP_SIGNALS, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))


def _signal_name(signum: int) -> str:
    if signum == 0:
        return "worker_ended"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _log_notice(notice: EngineNotice) -> None:
    if notice.kind == "host_locked":
        log.warning("host_locked", host_id=notice.host_id, detail=notice.detail)
    else:
        log.debug("mission_event", kind=notice.kind, host_id=notice.host_id, detail=notice.detail)


def rehearsed(loaded: LoadedConfig) -> LoadedConfig:
    """``loaded`` with ``daemon.dry_run`` on."""
    daemon = loaded.config.daemon.model_copy(update={"dry_run": True})
    return dataclasses.replace(loaded, config=loaded.config.model_copy(update={"daemon": daemon}))


def run_daemon(
    loaded: LoadedConfig,
    *,
    explicit: Path | None,
    cwd: Path,
    env: Mapping[str, str],
    dry_run: bool = False,
) -> int:
    """Run the daemon in this process (``reaper start --foreground``); ``dry_run``
    rehearses whatever the configuration says."""
    return Daemon(loaded, explicit=explicit, cwd=cwd, env=env, dry_run=dry_run).run()
