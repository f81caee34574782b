"""Every benchmark of ``make bench`` still runs, on the smallest inputs (nothing is timed).

The benchmarks import the code they measure, so a change of an API they use would otherwise
only show when someone next runs ``make bench``. Each runs in a session of its own: the scan
benchmarks raise their own CPU share (nice, autogroup), which must not reach pytest's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import require_redis_server

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120


def _run(script: str, *args: str) -> str:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:  # timed out: the benchmark and whatever it spawned
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    return out


def test_the_scan_benchmark_runs():
    out = _run("bench_scan.py", "--procs", "20", "--busy", "1", "--reps", "1")
    assert "total bench time" in out


def test_the_readers_benchmark_runs():
    out = _run("bench_readers.py", "--extra", "20", "--reps", "1")
    assert "procfs" in out
    assert "psutil" in out


def test_the_startup_benchmark_runs():
    out = _run("bench_startup.py", "--runs", "1")
    assert "`reaper scan --json`" in out


@pytest.mark.redis
def test_the_fleet_benchmark_runs():
    require_redis_server()
    out = _run(
        "bench_fleet.py",
        *("--hosts", "4", "--reps", "1", "--big-reps", "1"),
        *("--tasks", "40", "--batch", "10", "--jobs", "4"),
    )
    assert "Result events applied" in out
    assert "floor: the models' JSON work alone" in out
    assert "the Redis server's CPU" in out
    assert "Tasks dispatched" in out
    assert "Tasks executed by one worker" in out
