"""In-process CLI runs never change the CPU share of the test runner (pytest) itself.

docs/benchmarks.md: the boost is tested on a child in a session of its own, never on the test
runner. A one-shot `reaper scan`/`kill` boosts its session's autogroup and its threads while it
looks at the machine; run in-process, that session and those threads would be pytest's. The
autouse fixture in conftest.py turns the boost off for in-process commands; this proves it, by
reading pytest's priority *while* each command looks at the processes, and after.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from agents.platform import ProcfsReader
from agents.platform.priority import parse_autogroup
from agents.platform.snapshot import ProcessSnapshot
from overseer.cli.app import reaper
from tests.cli.conftest import Victims
from tests.integration.conftest import alive

AUTOGROUP = Path("/proc/self/autogroup")

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not AUTOGROUP.exists(),
    reason="needs Linux with autogroups (/proc/self/autogroup)",
)

Priority = tuple[int | None, dict[int, int]]


def runner_priority() -> Priority:
    """pytest's session autogroup nice (None for the root task group) and each thread's nice."""
    text = AUTOGROUP.read_text()
    autogroup = parse_autogroup(text)[1] if text.strip() else None
    threads = {}
    for tid in map(int, os.listdir("/proc/self/task")):
        try:
            threads[tid] = os.getpriority(os.PRIO_PROCESS, tid)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    return autogroup, threads


@pytest.fixture
def during_looks(monkeypatch: pytest.MonkeyPatch) -> list[Priority]:
    """pytest's priority, sampled each time a command reads the process table."""
    samples: list[Priority] = []
    read = ProcfsReader.read

    def sampling_read(self: ProcfsReader) -> ProcessSnapshot:
        samples.append(runner_priority())
        return read(self)

    monkeypatch.setattr(ProcfsReader, "read", sampling_read)
    return samples


def test_scan_and_kill_leave_the_runners_cpu_share_alone(
    runner: CliRunner, victims: Victims, during_looks: list[Priority]
) -> None:
    before = runner_priority()

    scan = runner.invoke(
        reaper, ["scan", "--json", "--config", str(victims.config)], catch_exceptions=False
    )
    assert scan.exit_code == 0, scan.output
    scanned = len(during_looks)
    assert scanned >= 1  # the table was read in process, with pytest's priority sampled

    kill = runner.invoke(
        reaper, ["kill", "--all", "--yes", "--config", str(victims.config)], catch_exceptions=False
    )
    assert kill.exit_code == 0, kill.output
    assert f"Process {victims.victim} terminated" in kill.output
    assert not alive(victims.victim)
    assert len(during_looks) > scanned

    # Neither while the commands looked (when a boost would be in force) nor after: the
    # session's autogroup nice, and the nice of every thread pytest had before.
    for sample in [*during_looks, runner_priority()]:
        assert sample[0] == before[0]
        assert {tid: sample[1].get(tid, nice) for tid, nice in before[1].items()} == before[1]
