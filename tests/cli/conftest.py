"""Fixtures for the CLI tests: an isolated home, and victims scoped to the test's children.

Every configuration that can kill is scoped with ``scope = "descendants"`` to a bash this
test spawned in a session of its own; teardown kills that bash's whole process group. Nothing
else on the machine can be selected, whatever the rules say.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import psutil
import pytest
from click.testing import CliRunner

from overseer import local_reaper
from tests.integration.conftest import Children, descendants_by_cmdline, wait_until

VICTIM = "/tmp/test_cli_victim"
BYSTANDER = "/tmp/cli_bystander"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux host")


@pytest.fixture(autouse=True)
def _never_boost_the_test_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process commands run inside pytest: their one-shot CPU boost would raise (and then
    restore) the autogroup nice of pytest's own session and the nice of its threads.

    Every in-process command gets its reaper from ``LocalReaper``; it is built here with
    ``boost=False``, its supported switch (the one the daemon's tests use too), so a scan
    or kill looks at the machine unboosted. And should anything in-process still reach the
    boost, the test fails instead of touching the runner's priority. Console-script tests
    run ``reaper`` in a session of its own, where boosting is the real behaviour and harmless.
    """
    built_with = local_reaper.LocalReaper.__init__

    def unboosted(self: local_reaper.LocalReaper, *args: Any, **kwargs: Any) -> None:
        kwargs["boost"] = False
        built_with(self, *args, **kwargs)

    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("an in-process CLI test tried to boost pytest's CPU share")

    monkeypatch.setattr(local_reaper.LocalReaper, "__init__", unboosted)
    monkeypatch.setattr(local_reaper, "boosted_cpu_share", refuse)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME, XDG dirs and cwd in tmp: no user file, no project file, audit log in tmp."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.delenv("REAPER_CONFIG", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


@pytest.fixture
def children() -> Iterator[Children]:
    """Processes this test spawned (each leads its own session); their groups die at teardown."""
    kids = Children()
    try:
        yield kids
    finally:
        kids.reap_all()


@pytest.fixture
def runner(home: Path) -> CliRunner:
    return CliRunner()


@dataclass
class Victims:
    bash: int
    victim: int
    bystander: int
    config: Path
    audit: Path

    def audit_lines(self) -> list[dict[str, object]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line]


def scoped_config(path: Path, root: int, audit: Path, extra: str = "") -> Path:
    path.write_text(
        f"""
[logging]
file = "{audit}"

[safety]
protect_root = false
min_pid = 2
scope = "descendants"
scope_root_pid = {root}

[scanner]
cpu_sample_seconds = 0.05

[[rules]]
name = "cli_victim"
priority = "critical"
description = "the test's victim"
[rules.conditions]
command_patterns = ["^{VICTIM}"]
age_seconds = 0
[rules.action]
signal = "SIGTERM"
timeout_seconds = 5
{extra}
"""
    )
    return path


@pytest.fixture
def victims(children: Children, home: Path, tmp_path: Path) -> Victims:
    """A bash (own session) with two children: the victim a rule selects, and a bystander."""
    bash = children.spawn(f"(exec -a {VICTIM} sleep 300) & (exec -a {BYSTANDER} sleep 300) & wait")
    kids = wait_until(
        lambda: (
            found
            if len(found := descendants_by_cmdline(bash.pid)) >= 2
            and f"{VICTIM} 300" in found
            and f"{BYSTANDER} 300" in found
            else None
        ),
        what="victims started",
    )
    assert isinstance(kids, dict)
    audit = tmp_path / "audit.log"
    config = scoped_config(tmp_path / "reaper.toml", bash.pid, audit)
    # No teardown here: `children` kills the bash's whole process group, victims included.
    return Victims(
        bash=bash.pid,
        victim=kids[f"{VICTIM} 300"],
        bystander=kids[f"{BYSTANDER} 300"],
        config=config,
        audit=audit,
    )


def unused_pid() -> int:
    """A PID no process has (the highest free one below pid_max)."""
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except OSError:
        pid_max = 99999
    pid = pid_max - 1
    while pid > 1 and _exists(pid):  # psutil looks, never signals
        pid -= 1
    return pid


def _exists(pid: int) -> bool:
    return bool(psutil.pid_exists(pid))
