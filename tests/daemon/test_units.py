"""Unit tests of the daemon's parts: PID file, state file, health checks, metrics, paths."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents.platform.priority import CpuShareBooster
from infra.metrics import METRIC_NAMES, MetricsServer, MetricsSnapshot, bucket_index, exposition
from overseer.cli.daemon_cmd import render_status
from overseer.daemon.health import HealthResult, HealthScheduler, _Running, run_check
from overseer.daemon.paths import DaemonPaths
from overseer.daemon.pidfile import (
    DaemonAlreadyRunningError,
    PidFile,
    PidRecord,
    live_record,
    read_record,
)
from overseer.daemon.runner import boost_cpu_share
from overseer.daemon.state import DaemonState, RecentAction, read_state, write_state
from reaper_engine.config import DaemonSettings, HealthCheck

# -- PID file ------------------------------------------------------------------------------


def test_pid_file_created_with_pid_and_start_time_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "run" / "reaper.pid"
    with PidFile(path) as pidfile:
        record = read_record(path)
        assert record == pidfile.record
        assert record is not None
        assert record.pid == os.getpid()
        assert live_record(path) == record
    assert not path.exists()


def test_second_instance_refused(tmp_path: Path) -> None:
    path = tmp_path / "reaper.pid"
    with PidFile(path):
        with pytest.raises(DaemonAlreadyRunningError, match=f"PID {os.getpid()}"):
            PidFile(path).acquire()
        assert path.exists()  # the refused instance did not remove the owner's file


def test_stale_pid_file_of_dead_process_is_replaced(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    dead = PidRecord.of_process(proc.pid)
    proc.wait()
    path = tmp_path / "reaper.pid"
    path.write_text(dead.render())
    assert live_record(path) is None
    with PidFile(path) as pidfile:
        assert read_record(path) == pidfile.record


def test_pid_reused_by_another_process_is_stale(tmp_path: Path) -> None:
    # Our own PID but another start time: what a reused PID looks like.
    me = PidRecord.of_process(os.getpid())
    path = tmp_path / "reaper.pid"
    path.write_text(PidRecord(me.pid, me.start_time - 1000).render())
    assert live_record(path) is None
    with PidFile(path) as pidfile:
        assert pidfile.record == me


def test_garbage_pid_file_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "reaper.pid"
    path.write_text("not a pid\n")
    with PidFile(path):
        assert read_record(path) is not None


def test_release_leaves_another_daemons_file(tmp_path: Path) -> None:
    path = tmp_path / "reaper.pid"
    pidfile = PidFile(path)
    pidfile.acquire()
    path.write_text(PidRecord(4242, 1.0).render())  # someone replaced it meanwhile
    pidfile.release()
    assert path.exists()


# -- paths ---------------------------------------------------------------------------------


def test_default_paths_follow_xdg(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    paths = DaemonPaths.resolve(DaemonSettings(), env)
    assert paths.pid_file == tmp_path / "run" / "reaper" / "reaper.pid"
    assert paths.state_file == tmp_path / ".local" / "state" / "reaper" / "state.json"
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": "relative", "XDG_STATE_HOME": "/s"}
    paths = DaemonPaths.resolve(DaemonSettings(), env)
    assert paths.pid_file == Path("/s/reaper/reaper.pid")


def test_explicit_pid_file_keeps_state_next_to_it(tmp_path: Path) -> None:
    settings = DaemonSettings(pid_file="~/x/reaper.pid")
    paths = DaemonPaths.resolve(settings, {"HOME": str(tmp_path)})
    assert paths.pid_file == tmp_path / "x" / "reaper.pid"
    assert paths.state_file == tmp_path / "x" / "reaper.pid.state.json"


# -- state ---------------------------------------------------------------------------------


def _state() -> DaemonState:
    now = datetime.now(UTC)
    state = DaemonState(pid=1234, running=True, started_at=now, last_scan_at=now)
    state.killed_total = 3
    state.cpu_recovered_total = 199.5
    state.rogue_by_priority = {"critical": 2}
    state.observe_scan(0.2)
    state.remember(
        [
            RecentAction(
                timestamp=datetime.now(UTC),
                action="kill",
                outcome="terminated",
                pid=99,
                command="/tmp/test_x 1",
                rule="r",
                priority="critical",
                cpu_percent=99.5,
                dry_run=False,
            )
        ]
    )
    return state


def test_state_round_trips_and_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "s" / "state.json"
    state = _state()
    write_state(path, state)
    assert read_state(path) == state
    state.killed_total = 4
    write_state(path, state)
    assert read_state(path) == state
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]  # no temporary left


def test_unreadable_or_too_new_state_is_none(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert read_state(path) is None
    path.write_text("{not json")
    assert read_state(path) is None
    path.write_text('{"schema_version": 99}')
    assert read_state(path) is None


def test_recent_actions_are_capped() -> None:
    state = _state()
    action = state.recent_actions[0]
    state.remember([action] * 50)
    assert len(state.recent_actions) == 20


def test_status_view_lists_seed_fields() -> None:
    text = "\n".join(render_status(True, 1234, _state()))
    for label in (
        "Running (PID 1234)",
        "Uptime:",
        "Last scan:",
        "Processes:",
        "Rogue detected:  2 processes (2 critical)",
        "Killed (total):  3 processes",
        "CPU recovered:   199.5% (total)",
        "Dry run:         Disabled",
        "KILLED PID 99 (test_x) - r - CPU 99.5%",
    ):
        assert label in text
    assert "Not running" in "\n".join(render_status(False, None, None))


# -- health checks -------------------------------------------------------------------------


def _check(command: list[str], timeout: float = 5.0) -> HealthCheck:
    return HealthCheck(
        name="c", command=tuple(command), interval_seconds=60, timeout_seconds=timeout
    )


def test_health_check_passes_and_keeps_output_tail() -> None:
    result = run_check(_check([sys.executable, "-c", "print('x' * 5000 + 'END')"]))
    assert result.ok
    assert result.exit_code == 0
    assert result.output_tail.rstrip().endswith("END")
    assert len(result.output_tail) <= 2000


def test_health_check_failure_reports_exit_code() -> None:
    result = run_check(_check([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]))
    assert not result.ok
    assert result.exit_code == 3
    assert "boom" in result.output_tail


def test_health_check_timeout_kills_it() -> None:
    result = run_check(_check([sys.executable, "-c", "import time; time.sleep(30)"], 0.3))
    assert not result.ok
    assert result.timed_out
    assert result.exit_code is None
    assert result.duration_seconds < 5


def test_health_check_missing_program() -> None:
    result = run_check(_check(["/nonexistent/program"]))
    assert not result.ok
    assert result.error is not None
    assert "cannot run" in result.error


def test_scheduler_reports_and_stop_interrupts_a_running_check() -> None:
    seen: list[HealthResult] = []
    got = threading.Event()

    def on_result(result: HealthResult) -> None:
        seen.append(result)
        got.set()

    quick = HealthCheck(name="quick", command=("true",), interval_seconds=60, timeout_seconds=5)
    slow = HealthCheck(
        name="slow", command=("sleep", "30"), interval_seconds=60, timeout_seconds=30
    )
    scheduler = HealthScheduler([quick, slow], on_result).start()
    assert got.wait(10)
    began = datetime.now(UTC)
    scheduler.stop()
    assert (datetime.now(UTC) - began).total_seconds() < 5  # not the slow check's 30 s
    assert [r.name for r in seen] == ["quick"]
    assert seen[0].ok


# -- metrics -------------------------------------------------------------------------------


def test_exposition_has_every_metric_name() -> None:
    text = exposition(_state().metrics()).decode()
    for name in METRIC_NAMES:
        assert f"# TYPE {name}" in text
    assert "reaper_processes_killed_total 3.0" in text
    assert "reaper_cpu_recovered_percent_total 199.5" in text
    assert 'reaper_rogue_processes_detected{priority="critical"} 2.0' in text
    assert 'reaper_scan_duration_seconds_bucket{le="0.25"} 1.0' in text
    assert "reaper_scan_duration_seconds_count 1.0" in text
    assert "_created" not in text
    assert "python_gc" not in text  # its own registry, not the global one


def test_exposition_of_health_and_skips() -> None:
    snapshot = MetricsSnapshot(
        protected_skips={"whitelisted": 2}, health_up={"a": True, "b": False}
    )
    text = exposition(snapshot).decode()
    assert 'reaper_protected_skips_total{protection="whitelisted"} 2.0' in text
    assert 'reaper_health_check_up{name="a"} 1.0' in text
    assert 'reaper_health_check_up{name="b"} 0.0' in text


def test_bucket_index() -> None:
    assert bucket_index(0.01) == 0
    assert bucket_index(0.05) == 0
    assert bucket_index(1000) == 10


def test_idle_connection_neither_stalls_scrapes_nor_blocks_stop() -> None:
    server = MetricsServer(lambda: MetricsSnapshot(killed_total=7), port=0).start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    stopper: threading.Thread | None = None
    try:
        idle.sendall(b"GET /metr")  # a partial request, then silence
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=3) as response:
            assert "reaper_processes_killed_total 7.0" in response.read().decode()
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        stopper.join(3)
        assert not stopper.is_alive(), "stop() waited on an idle client"
    finally:
        idle.close()  # unblocks a single-threaded server, so a failure still cleans up
        if stopper is not None:
            stopper.join(10)
        else:
            server.stop()


# -- CPU boost -----------------------------------------------------------------------------


def _fake_booster(tmp_path: Path, writes: list[bytes], niced: list[int]) -> CpuShareBooster:
    proc = tmp_path / "proc"
    (proc / "self" / "task" / "4242").mkdir(parents=True)
    (proc / "self" / "autogroup").write_text("/autogroup-7 nice 0\n")
    return CpuShareBooster(
        proc_root=proc,
        platform="linux",
        get_nice=lambda _tid: 0,
        set_nice=lambda tid, nice: niced.append(nice),
        write_file=lambda _path, data: writes.append(data),
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="autogroups are Linux's")
def test_boost_skips_the_session_autogroup_when_a_terminal_is_attached(tmp_path: Path) -> None:
    writes: list[bytes] = []
    niced: list[int] = []
    result = boost_cpu_share(
        terminal=lambda: "/dev/pts/3", booster=_fake_booster(tmp_path, writes, niced)
    )
    assert writes == []  # the user's session keeps its share
    assert niced == [-10]  # the daemon's own threads are boosted
    step = result.step("autogroup")
    assert step is not None
    assert step.outcome != "applied"
    assert "controlling terminal" in (step.reason or "")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="autogroups are Linux's")
def test_boost_uses_the_autogroup_of_a_detached_session(tmp_path: Path) -> None:
    writes: list[bytes] = []
    niced: list[int] = []
    boost_cpu_share(terminal=lambda: None, booster=_fake_booster(tmp_path, writes, niced))
    assert writes == [b"-10"]
    assert niced == [-10]


def test_check_registered_after_stop_is_killed_at_once() -> None:
    # The race: a check starts just as stop() runs its kill pass, and registers after it.
    running = _Running()
    running.kill_all()  # stop() has been through
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        running.add("late", proc)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.returncode is None:  # unreaped: the group it leads is still ours
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_state_file_not_utf8_is_no_state(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"\xff\xfe{\x00")
    assert read_state(path) is None
