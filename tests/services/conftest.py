"""Service tests never touch the real home or the real service manager.

``home`` points HOME (and XDG_CONFIG_HOME) at a temporary directory; ``recorder`` stands in
for the one runner every systemctl/launchctl/schtasks call goes through, recording argv and
answering from a script of canned results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from overseer.services import CommandResult


class RecordingRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.timeouts: list[float] = []
        # argv prefix -> (returncode, stdout, stderr); the longest matching prefix wins.
        self.responses: dict[tuple[str, ...], tuple[int, str, str]] = {}

    def answer(self, *prefix: str, rc: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.responses[prefix] = (rc, stdout, stderr)

    def __call__(self, argv: Sequence[str], *, timeout: float = 30.0) -> CommandResult:
        args = tuple(argv)
        self.calls.append(args)
        self.timeouts.append(timeout)
        matches = [p for p in self.responses if args[: len(p)] == p]
        if not matches:
            return CommandResult(args, 0)
        rc, out, err = self.responses[max(matches, key=len)]
        return CommandResult(args, rc, out, err)


@pytest.fixture
def recorder() -> RecordingRunner:
    return RecordingRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("REAPER_CONFIG", raising=False)
    # Configuration loading looks for a project file upward from the working directory.
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


@pytest.fixture
def fake_reaper(tmp_path: Path) -> Path:
    """A real executable to name in ExecStart (systemd-analyze checks that it exists)."""
    script = tmp_path / "bin" / "reaper"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return script
