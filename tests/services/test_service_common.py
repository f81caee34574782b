"""What the backends share: which program is run, and whose path rules apply to it."""

from __future__ import annotations

import plistlib
from pathlib import PurePosixPath, PureWindowsPath

import pytest

import overseer.services
import overseer.services.common
from overseer.services import backend_for, build_context
from overseer.services.common import is_interpreter, resolve_program, target_path


@pytest.mark.parametrize(
    ("platform", "program", "interpreter"),
    [
        ("linux", "/usr/bin/python", True),
        ("linux", "/usr/bin/python3", True),
        ("linux", "/opt/py/bin/python3.11", True),
        ("linux", "/opt/py/bin/python3.13t", True),  # free-threaded build
        ("linux", "/opt/pypy/bin/pypy3", True),
        ("macos", "/Library/Frameworks/Python.framework/Versions/3.12/bin/python3.12", True),
        (
            "macos",
            "/Library/Frameworks/Python.framework/Resources/Python.app/Contents/MacOS/Python",
            True,
        ),
        ("windows", "C:\\Python311\\python.exe", True),
        ("windows", "C:\\Python311\\pythonw.exe", True),
        ("windows", "C:\\Python311\\PYTHONW.EXE", True),
        ("windows", "C:/Python311/python3.11.exe", True),
        ("linux", "/home/dev/.venv/bin/reaper", False),
        ("windows", "C:\\Tools\\reaper\\Scripts\\reaper.exe", False),
        ("linux", "/usr/bin/python3-config", False),
        ("linux", "/srv/python/reaper", False),  # "python" in a directory is not the program
        # Windows' separators are not Linux's: this is one file name on Linux.
        ("linux", "/x/C:\\Tools\\python.exe", False),
    ],
)
def test_interpreters_are_told_from_the_reaper_script(platform, program, interpreter):
    assert is_interpreter(platform, program) is interpreter


@pytest.mark.parametrize(
    ("executable", "program"),
    [
        ("/opt/py/bin/python3", ("/opt/py/bin/python3", "-m", "overseer.cli")),
        ("/opt/reaper/bin/reaper", ("/opt/reaper/bin/reaper",)),
    ],
)
def test_a_given_executable_gets_the_module_args_only_if_it_is_python(executable, program):
    platform = "macos" if overseer.services.current_platform() != "macos" else "linux"
    assert resolve_program(platform, executable) == (program, False)


def test_another_platforms_paths_follow_that_platforms_rules(monkeypatch):
    monkeypatch.setattr(overseer.services.common, "current_platform", lambda: "linux")
    assert target_path("windows", "C:\\Tools\\pythonw.exe", "--executable") == PureWindowsPath(
        "C:\\Tools\\pythonw.exe"
    )
    assert target_path("windows", "\\\\server\\share\\r.toml", "--config") == PureWindowsPath(
        "\\\\server\\share\\r.toml"
    )
    with pytest.raises(ValueError, match="not an absolute windows path"):
        target_path("windows", "/opt/reaper", "--executable")  # no drive: relative there
    monkeypatch.setattr(overseer.services.common, "current_platform", lambda: "windows")
    assert target_path("macos", "/opt/reaper", "--executable") == PurePosixPath("/opt/reaper")
    with pytest.raises(ValueError, match="not an absolute macos path"):
        target_path("macos", "C:\\Tools\\reaper.exe", "--executable")


def test_a_mac_template_printed_on_windows_keeps_posix_paths(monkeypatch):
    # As on a Windows machine: concrete paths there would turn /Users/you into \Users\you.
    for module in (overseer.services, overseer.services.common):
        monkeypatch.setattr(module, "current_platform", lambda: "windows")
    ctx = build_context(
        "macos", executable="/opt/reaper/bin/python3", config="/Users/dev/reaper.toml"
    )
    assert not ctx.local
    backend = backend_for(ctx)
    assert str(backend.path) == "/Users/you/Library/LaunchAgents/io.reaper.daemon.plist"
    doc = plistlib.loads(backend.render_for_print())
    assert doc["WorkingDirectory"] == "/Users/you"
    assert doc["StandardErrorPath"] == "/Users/you/Library/Logs/reaper/reaper.err.log"
    assert doc["ProgramArguments"][:3] == ["/opt/reaper/bin/python3", "-m", "overseer.cli"]
    assert doc["ProgramArguments"][-2:] == ["--config", "/Users/dev/reaper.toml"]
