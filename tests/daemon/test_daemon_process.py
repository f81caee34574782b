"""The daemon as a real process (issue 4): it kills a runaway child of the test, reloads on
SIGHUP, keeps its configuration when a reload is broken, answers status and metrics, refuses a
second instance and stops cleanly on SIGTERM.

Everything is scoped to this test's own processes: the daemon may only touch descendants of a
bash the test started (``scope = "descendants"``), its files live under ``tmp_path``, and
teardown reaps the daemon and the bash group whatever happens.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from overseer.daemon.control import is_daemon_cmdline
from overseer.daemon.pidfile import PidRecord
from tests.daemon.conftest import Children, alive, wait_until
from tests.integration.conftest import descendants_by_cmdline

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and bash")

ROOT = Path(__file__).resolve().parents[2]
# The one place to change once the lead wires the commands into `reaper`: ["reaper"].
# The installed console script, as users run it (``python -m overseer.cli`` is the same).
REAPER = [sys.executable, "-m", "overseer.cli"]
VICTIM = "/tmp/test_daemon_victim"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Env:
    def __init__(self, tmp_path: Path, scope_root: int, port: int) -> None:
        self.tmp = tmp_path
        self.config = tmp_path / "reaper.toml"
        self.scope_root = scope_root
        self.port = port
        self.audit = tmp_path / "data" / "audit.log"
        self.pid_file = tmp_path / "run" / "reaper" / "reaper.pid"
        self.state_file = tmp_path / "state" / "reaper" / "state.json"
        self.vars = {
            **{k: v for k, v in os.environ.items() if k != "REAPER_CONFIG"},
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "XDG_RUNTIME_DIR": str(tmp_path / "run"),
            "PYTHONPATH": str(ROOT),
            "NO_COLOR": "1",
        }

    def write_config(self, *, dry_run: bool) -> None:
        self.config.write_text(
            f"""
[daemon]
scan_interval_seconds = 0.5
dry_run = {str(dry_run).lower()}

[logging]
file = "{self.audit}"

[notifications]
enabled = false

[metrics]
enabled = true
http_port = {self.port}
path = "/metrics"

[safety]
protect_root = false
min_pid = 2
scope = "descendants"
scope_root_pid = {self.scope_root}

[[rules]]
name = "test_daemon_victim"
priority = "critical"
[rules.conditions]
age_seconds = 0
command_patterns = ["^{VICTIM}"]
[rules.action]
signal = "SIGTERM"
timeout_seconds = 2

[[health_checks]]
name = "probe"
command = ["true"]
interval_seconds = 1
timeout_seconds = 1
"""
        )

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*REAPER, *args, "--config", str(self.config)],
            env=self.vars,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def state(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return doc

    def audit_lines(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.audit.read_text().splitlines()]
        except FileNotFoundError:
            return []


@pytest.fixture
def daemon_proc() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Holds the daemon this test spawns; teardown stops exactly that process."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


@pytest.mark.slow
def test_daemon_end_to_end(
    tmp_path: Path, children: Children, daemon_proc: list[subprocess.Popen[bytes]]
) -> None:
    bash = children.spawn(f"(exec -a {VICTIM} sleep 300) & wait")
    found = wait_until(
        lambda: descendants_by_cmdline(bash.pid).get(f"{VICTIM} 300"), what="the victim"
    )
    victim = int(str(found))
    env = Env(tmp_path, bash.pid, _free_port())
    env.write_config(dry_run=True)

    log_file = (tmp_path / "daemon.log").open("wb")
    out_file = (tmp_path / "daemon.out").open("wb")
    daemon = subprocess.Popen(
        [*REAPER, "--log-format", "json", "start", "--foreground", "--config", str(env.config)],
        env=env.vars,
        cwd=tmp_path,
        stdout=out_file,
        stderr=log_file,
        start_new_session=True,  # its own session: its CPU boost cannot touch pytest's
    )
    daemon_proc.append(daemon)

    def daemon_log() -> str:
        return (tmp_path / "daemon.log").read_text(errors="replace")

    # 1. Dry run: the victim is found and rehearsed, never signalled.
    def rehearsed() -> bool:
        st = env.state()
        return bool(st) and any(
            a["pid"] == victim and a["action"] == "dry_run" for a in st["recent_actions"]
        )

    wait_until(rehearsed, what=f"a dry-run record for the victim\n{daemon_log()}")
    assert alive(victim)
    st = env.state()
    assert st is not None
    assert st["running"]
    assert st["pid"] == daemon.pid
    assert st["rogue_by_priority"].get("critical") == 1
    assert st["dry_run"] is True

    # 2. SIGHUP with dry_run = false: the new configuration applies and the victim dies.
    env.write_config(dry_run=False)
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: (env.state() or {}).get("reloads") == 1, what="the reload")
    wait_until(lambda: not alive(victim), what="the victim to be killed")
    wait_until(lambda: (env.state() or {}).get("killed_total", 0) >= 1, what="kill counted")
    kills = [r for r in env.audit_lines() if r["pid"] == victim and r["action"] == "kill"]
    assert kills
    assert kills[-1]["outcome"] in ("terminated", "killed")
    assert kills[-1]["config_file"] == str(env.config)
    assert not env.state()["dry_run"]  # type: ignore[index]

    # 3. A broken file on SIGHUP: the error is recorded and logged, the old config stays.
    env.config.write_text("[daemon\nscan_interval_seconds = 0.5\n")
    scans_before = env.state()["scans_total"]  # type: ignore[index]
    daemon.send_signal(signal.SIGHUP)
    wait_until(
        lambda: str(env.config) in ((env.state() or {}).get("last_reload_error") or ""),
        what="the reload error",
    )
    # The running config scans every 0.5 s and the defaults every 60 s: two more scans
    # within the deadline prove the old configuration is still the one in force.
    wait_until(
        lambda: (env.state() or {}).get("scans_total", 0) > scans_before + 1,
        timeout=10,
        what="scans to go on after the failed reload",
    )
    assert daemon.poll() is None
    st = env.state()
    assert st is not None
    assert st["reloads"] == 1
    assert st["dry_run"] is False
    wait_until(lambda: "config_reload_failed" in daemon_log(), what="the logged error")
    env.write_config(dry_run=False)  # a valid file again, for the commands below

    # 4. status, status --json, metrics (command and endpoint).
    status = env.run("status")
    assert status.returncode == 0, status.stderr
    assert f"Running (PID {daemon.pid})" in status.stdout
    assert "Killed (total):  1 process" in status.stdout
    assert "KILLED PID" in status.stdout
    assert "test_daemon_victim" in status.stdout
    assert "probe" in status.stdout
    as_json = json.loads(env.run("status", "--json").stdout)
    assert as_json["running"] is True
    assert as_json["pid"] == daemon.pid

    metrics = env.run("metrics")
    assert metrics.returncode == 0
    assert "reaper_processes_killed_total 1.0" in metrics.stdout
    wait_until(lambda: "probe" in ((env.state() or {}).get("health") or {}), what="health")
    code, body = _get(f"http://127.0.0.1:{env.port}/metrics")
    assert code == 200
    assert "reaper_processes_monitored" in body
    assert 'reaper_health_check_up{name="probe"} 1.0' in body
    assert _get(f"http://127.0.0.1:{env.port}/other")[0] == 404

    # 5. A second instance refuses, and leaves the first one's PID file alone.
    second = env.run("start", "--foreground")
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert str(daemon.pid) in second.stderr
    assert env.pid_file.read_text().split()[0] == str(daemon.pid)

    # 6. SIGTERM: a clean exit, PID file removed, state says stopped.
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(20) == 0, daemon_log()
    # The log went to stderr, in the format asked for, at info level; stdout got nothing.
    assert (tmp_path / "daemon.out").read_bytes() == b""
    events = [json.loads(line)["event"] for line in daemon_log().splitlines() if line]
    assert "daemon_started" in events
    assert "daemon_stopped" in events
    assert not env.pid_file.exists()
    st = env.state()
    assert st is not None
    assert st["running"] is False
    assert st["stopped_at"]
    stopped = env.run("status")
    assert stopped.returncode == 3
    assert "Not running" in stopped.stdout
    assert "Killed (total):  1 process\n" in stopped.stdout  # the persisted state


@pytest.mark.slow
def test_start_detached_then_stop(tmp_path: Path, children: Children) -> None:
    bash = children.spawn("exec sleep 300")  # an empty scope: nothing to kill
    env = Env(tmp_path, bash.pid, _free_port())
    env.write_config(dry_run=True)
    started = env.run("-q", "start")
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("Reaper daemon started (PID")  # no emoji: piped
        assert "Scan interval: 0.5 seconds" in started.stdout
        pid = int(env.pid_file.read_text().split()[0])
        assert f"PID {pid})" in started.stdout
        assert env.run("status").returncode == 0
        again = env.run("start")
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        stopped = env.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == "Reaper daemon stopped\n"  # no log line, no emoji: piped
    assert not env.pid_file.exists()
    assert env.run("stop").stdout.startswith("Reaper daemon is not running")
    # -q reached the detached daemon: its log file holds no info lines.
    daemon_log = (env.tmp / "state" / "reaper" / "daemon.log").read_text()
    assert "daemon_started" not in daemon_log


LOOKALIKE = "less /home/u/.config/reaper/reaper.toml"


def _forge_pid_file(env: Env, pid: int, mode: int = 0o600) -> None:
    env.pid_file.parent.mkdir(parents=True, exist_ok=True)
    env.pid_file.write_text(PidRecord.of_process(pid).render())
    env.pid_file.chmod(mode)


@contextlib.contextmanager
def _hold_lock(path: Path) -> Iterator[None]:
    """What a live daemon does: hold an flock on its PID file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_stop_never_signals_a_lookalike_even_with_the_lock_held(
    tmp_path: Path, children: Children
) -> None:
    # "reaper" appears in its command line, its PID and start time are in the PID file and
    # the PID file's lock is held: only the command line's shape tells it is no daemon.
    other = children.spawn(f'exec -a "{LOOKALIKE}" sleep 300')
    wait_until(lambda: LOOKALIKE in " ".join(psutil.Process(other.pid).cmdline()), what="exec")
    env = Env(tmp_path, other.pid, 1)  # no daemon: the port is never bound
    env.write_config(dry_run=True)
    _forge_pid_file(env, other.pid)
    with _hold_lock(env.pid_file):
        result = env.run("stop", "--timeout", "2")
        status = env.run("status")
    assert result.returncode == 1, result.stdout
    assert "Refusing to signal" in result.stderr
    assert "not a reaper daemon" in result.stderr
    assert alive(other.pid)
    assert status.returncode == 3
    assert "Not running (stale PID file)" in status.stdout


def test_stop_and_status_ignore_a_pid_file_nobody_locks(tmp_path: Path, children: Children) -> None:
    # The repro: a PID file naming a live non-daemon; no daemon holds its lock.
    other = children.spawn(f'exec -a "{LOOKALIKE}" sleep 300')
    wait_until(lambda: LOOKALIKE in " ".join(psutil.Process(other.pid).cmdline()), what="exec")
    env = Env(tmp_path, other.pid, 1)  # no daemon: the port is never bound
    env.write_config(dry_run=True)
    _forge_pid_file(env, other.pid)
    result = env.run("stop", "--timeout", "2")
    assert result.returncode == 0
    assert "not running (stale PID file" in result.stdout
    assert alive(other.pid)
    status = env.run("status")
    assert status.returncode == 3
    assert "Not running (stale PID file)" in status.stdout
    assert json.loads(env.run("status", "--json").stdout)["running"] is False


@pytest.mark.parametrize("mode", [0o620, 0o602])
def test_stop_refuses_a_pid_file_others_can_write(
    tmp_path: Path, children: Children, mode: int
) -> None:
    other = children.spawn("exec sleep 300")
    env = Env(tmp_path, other.pid, 1)  # no daemon: the port is never bound
    env.write_config(dry_run=True)
    _forge_pid_file(env, other.pid, mode)
    with _hold_lock(env.pid_file):
        result = env.run("stop", "--timeout", "2")
    assert result.returncode == 1
    assert "writable by group or others" in result.stderr
    assert alive(other.pid)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [
                "/usr/bin/python3",
                "-m",
                "overseer.daemon",
                "--log-format",
                "json",
                "start",
                "--foreground",
            ],
            True,
        ),
        (["python3.11", "-m", "overseer.cli", "start", "--foreground", "--config", "x"], True),
        (["/home/u/.local/bin/reaper", "-q", "start", "--foreground"], True),
        (["/venv/bin/python", "/venv/bin/reaper", "start", "--foreground"], True),
        ([LOOKALIKE, "300"], False),
        (["less", "/home/u/.config/reaper/reaper.toml"], False),
        (["vim", "reaper", "start", "--foreground"], False),
        (["/usr/bin/reaper", "start"], False),
        (["/usr/bin/reaper", "--foreground", "start"], False),
        (["python3", "-m", "overseer.daemon", "status"], False),
        (["python3", "-m", "reaper_x", "start", "--foreground"], False),
        ([], False),
    ],
)
def test_daemon_command_line_shape(argv: list[str], expected: bool) -> None:
    assert is_daemon_cmdline(argv) is expected
