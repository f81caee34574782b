"""The daemon when things break: a bad PID-file path, an unreadable reload, a dead worker."""

from __future__ import annotations

from pathlib import Path

import pytest

import overseer.daemon.runner as runner_module
from infra.config_files import load_config
from overseer.daemon.control import daemon_command, is_daemon_cmdline
from overseer.daemon.pidfile import PidFileError, check_pid_path
from overseer.daemon.runner import Daemon


def test_a_pid_file_path_that_is_a_directory_or_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.pid").mkdir()
    with pytest.raises(PidFileError, match="not a regular file"):
        check_pid_path(tmp_path / "dir.pid")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(PidFileError, match="is not a directory"):
        check_pid_path(tmp_path / "plain" / "reaper.pid")


def _daemon(tmp_path: Path) -> Daemon:
    config = tmp_path / "reaper.toml"
    config.write_text(
        "[daemon]\n"
        f'pid_file = "{tmp_path / "reaper.pid"}"\n'
        "scan_interval_seconds = 3600\n"
        "[metrics]\nenabled = false\n"
        "[notifications]\nenabled = false\n"
        f'[logging]\nfile = "{tmp_path / "audit.log"}"\n'
    )
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    loaded = load_config(explicit=config, cwd=tmp_path, env=env)
    return Daemon(loaded, explicit=config, cwd=tmp_path, env=env, boost=False)


def test_an_unreadable_config_on_reload_keeps_the_running_one(tmp_path, monkeypatch):
    daemon = _daemon(tmp_path)
    before = daemon.loaded

    def unreadable(**_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runner_module, "load_config", unreadable)
    assert daemon.reload() is False
    assert daemon.loaded is before
    assert "Permission denied" in (daemon.state.last_reload_error or "")


def test_the_daemon_exits_non_zero_when_its_watch_loop_dies(tmp_path, monkeypatch):
    daemon = _daemon(tmp_path)

    def broken() -> None:
        raise RuntimeError("watch loop bug")

    # Before any scan: nothing on this machine is looked at, let alone signalled.
    monkeypatch.setattr(daemon, "_apply_pending", broken)
    assert daemon.run() == 1
    assert not (tmp_path / "reaper.pid").exists()


def test_start_dry_run_rehearses_whatever_the_files_say_reloads_included(tmp_path):
    # `reaper start --dry-run` over a file that says nothing of dry_run (false by default).
    plain = _daemon(tmp_path)
    assert plain.loaded.config.daemon.dry_run is False
    rehearsal = Daemon(
        plain.loaded,
        explicit=plain.explicit,
        cwd=tmp_path,
        env=plain.env,
        boost=False,
        dry_run=True,
    )
    assert rehearsal.loaded.config.daemon.dry_run is True
    # Now the file says the opposite, and a SIGHUP reads it again.
    config = tmp_path / "reaper.toml"
    config.write_text(config.read_text().replace("[daemon]\n", "[daemon]\ndry_run = false\n"))
    assert rehearsal.reload() is True
    rehearsal._apply_pending()  # what the worker thread does with a reload
    assert rehearsal.state.reloads == 1
    assert rehearsal.loaded.config.daemon.dry_run is True
    assert rehearsal.state.dry_run is True  # what `reaper status` shows


def test_the_detached_daemon_gets_the_flag_and_is_still_recognised():
    argv = daemon_command(Path("/etc/reaper.toml"), dry_run=True)
    assert argv[argv.index("start") :] == [
        "start",
        "--foreground",
        "--dry-run",
        "--config",
        "/etc/reaper.toml",
    ]
    assert is_daemon_cmdline(argv)
    assert "--dry-run" not in daemon_command(None)
