"""The launchd agent: the plist (parsed back with plistlib) and the launchctl command lines."""

from __future__ import annotations

import plistlib

import pytest

from overseer.services import EXIT_FAILED, EXIT_NOT_RUNNING, LaunchdAgent, build_context
from overseer.services.common import RC_NOT_FOUND, ServiceContext
from overseer.services.launchd import LABEL, render_plist


@pytest.fixture
def ctx(home, fake_reaper) -> ServiceContext:
    # Built as on a Mac (the platform is only a label once the program is given), uid 501.
    base = build_context("linux", executable=str(fake_reaper), env={"HOME": str(home)})
    return ServiceContext(
        platform="macos", home=home, program=base.program, uid=501, user="dev", env=base.env
    )


def test_plist_runs_the_daemon_at_load_and_restarts_it_on_failure(ctx, home, fake_reaper):
    doc = plistlib.loads(render_plist(ctx).encode())
    assert doc["Label"] == LABEL
    assert doc["ProgramArguments"] == [str(fake_reaper), "start", "--foreground"]
    assert doc["ProgramArguments"][0].startswith("/")
    assert doc["RunAtLoad"] is True
    assert doc["KeepAlive"] == {"SuccessfulExit": False}
    assert doc["ThrottleInterval"] == 10
    assert doc["ProcessType"] != "Background"
    assert doc["StandardOutPath"] == str(home / "Library/Logs/reaper/reaper.out.log")
    assert doc["StandardErrorPath"] == str(home / "Library/Logs/reaper/reaper.err.log")
    assert doc["WorkingDirectory"] == str(home)


def test_plist_keeps_untrusted_looking_paths_as_plain_strings(ctx, tmp_path):
    odd = tmp_path / "a <b> & 'c'" / "r.toml"
    doc = plistlib.loads(
        render_plist(
            ServiceContext(
                platform="macos", home=ctx.home, program=ctx.program, config=odd, uid=501
            )
        ).encode()
    )
    assert doc["ProgramArguments"][-2:] == ["--config", str(odd)]


def test_install_writes_the_plist_and_bootstraps_it(ctx, home, recorder):
    agent = LaunchdAgent(ctx, recorder)
    report = agent.install()
    assert report.exit_code == 0, report.text
    assert agent.path == home / "Library/LaunchAgents" / f"{LABEL}.plist"
    assert plistlib.loads(agent.path.read_bytes())["Label"] == LABEL
    assert (home / "Library/Logs/reaper").is_dir()
    assert recorder.calls == [
        ("launchctl", "bootout", f"gui/501/{LABEL}"),
        ("launchctl", "enable", f"gui/501/{LABEL}"),
        ("launchctl", "bootstrap", "gui/501", str(agent.path)),
    ]


def test_install_reports_a_failed_bootstrap(ctx, recorder):
    recorder.answer(
        "launchctl", "bootstrap", rc=5, stderr="Bootstrap failed: 5: Input/output error"
    )
    report = LaunchdAgent(ctx, recorder).install()
    assert report.exit_code == EXIT_FAILED
    assert "Bootstrap failed: 5" in report.text
    assert "launchctl bootstrap gui/501" in report.text


def test_install_without_launchctl(ctx, recorder):
    recorder.answer("launchctl", rc=RC_NOT_FOUND)
    report = LaunchdAgent(ctx, recorder).install()
    assert report.exit_code == EXIT_FAILED
    assert "launchctl not found" in report.text


def test_uninstall_boots_out_and_removes(ctx, recorder):
    agent = LaunchdAgent(ctx, recorder)
    agent.install()
    recorder.calls.clear()
    report = agent.uninstall()
    assert report.exit_code == 0
    assert not agent.path.exists()
    assert recorder.calls == [("launchctl", "bootout", f"gui/501/{LABEL}")]


def test_uninstall_of_an_agent_that_was_not_loaded_still_removes_it(ctx, recorder):
    agent = LaunchdAgent(ctx, recorder)
    agent.install()
    recorder.answer("launchctl", "bootout", rc=3, stderr="Boot-out failed: 3: No such process")
    report = agent.uninstall()
    assert report.exit_code == 0
    assert "was not loaded" in report.text
    assert not agent.path.exists()


_PRINT_RUNNING = f"""gui/501/{LABEL} = {{
\tactive count = 1
\tpath = /Users/dev/Library/LaunchAgents/{LABEL}.plist
\tstate = running
\tprogram = /Users/dev/.venv/bin/reaper
\tpid = 4242
}}
"""


def test_status_running(ctx, recorder):
    agent = LaunchdAgent(ctx, recorder)
    agent.install()
    recorder.answer("launchctl", "print", stdout=_PRINT_RUNNING)
    report = agent.status()
    assert report.exit_code == 0, report.text
    assert "state: running" in report.text
    assert "pid: 4242" in report.text
    assert recorder.calls[-1] == ("launchctl", "print", f"gui/501/{LABEL}")


def test_status_not_installed_is_a_plain_state(ctx, recorder):
    recorder.answer("launchctl", "print", rc=113, stderr="Could not find service")
    agent = LaunchdAgent(ctx, recorder)
    report = agent.status()
    assert report.exit_code == EXIT_NOT_RUNNING
    assert [(line.text, line.error) for line in report.lines] == [
        (f"not installed (no plist at {agent.path})", False)
    ]


def test_status_not_installed_but_still_loaded(ctx, recorder):
    recorder.answer("launchctl", "print", stdout=_PRINT_RUNNING)
    report = LaunchdAgent(ctx, recorder).status()
    assert report.exit_code == EXIT_NOT_RUNNING
    assert not any(line.error for line in report.lines)
    assert report.lines[1].text == (
        f"  but {LABEL} is still loaded in gui/501: launchctl bootout gui/501/{LABEL}"
    )


def test_status_installed_but_not_loaded(ctx, recorder):
    agent = LaunchdAgent(ctx, recorder)
    agent.install()
    recorder.answer("launchctl", "print", rc=113, stderr="Could not find service")
    report = agent.status()
    assert report.exit_code == EXIT_NOT_RUNNING
    assert report.lines[-1].text == f"loaded: no ({LABEL} is not in gui/501)"
