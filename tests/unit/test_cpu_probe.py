"""The early CPU probe: what it reads, and how it shortens a one-shot scan's sampling."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agents.cpu_probe import CpuProbe, probe_cpu
from agents.cpu_sampler import CpuSampler, sampled
from agents.platform import ProcfsReader
from tests.factories import proc

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _stat(pid: int, comm: str, utime: int, stime: int, start: int) -> str:
    rest = [
        "S",
        "1",
        str(pid),
        str(pid),
        "0",
        "-1",
        "0",
        "0",
        "0",
        "0",
        "0",
        str(utime),
        str(stime),
        "0",
        "0",
        "20",
        "0",
        "1",
        "0",
        str(start),
        "1000",
        "10",
    ]
    return f"{pid} ({comm}) {' '.join(rest)}\n"


@linux_only
def test_probe_reads_start_and_cpu_times_and_skips_what_it_cannot(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu 1 2 3\nbtime 1700000000\n")
    for pid, comm in ((100, "a) b"), (200, "plain")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(_stat(pid, comm, 300, 200, 5000))
    (tmp_path / "300").mkdir()
    (tmp_path / "300" / "stat").write_text("300 (cut")  # truncated: skipped
    (tmp_path / "self").mkdir()
    hz = os.sysconf("SC_CLK_TCK")
    probe = probe_cpu(str(tmp_path))
    assert probe is not None
    assert sorted(probe.samples) == [100, 200]
    create, cpu = probe.samples[100]
    assert create == 5000 / hz + 1700000000.0
    assert cpu == 500 / hz


@linux_only
def test_probe_start_times_equal_the_readers_to_the_bit() -> None:
    probe = probe_cpu()
    assert probe is not None
    me = ProcfsReader().get(os.getpid())
    assert me is not None
    assert probe.samples[os.getpid()][0] == me.create_time


def test_a_seeded_sampler_waits_only_for_what_the_window_lacks() -> None:
    p = proc(5000, cpu_time=10.0)
    probe = CpuProbe(taken_at=100.0, samples={5000: (p.create_time, 10.0)})
    sampler = CpuSampler()
    sampler.seed(probe)
    looks = iter([([p.model_copy(update={"cpu_time": 10.2})], 100.25)])  # one read, after
    waited: list[float] = []
    [out] = sampled(
        lambda: next(looks),
        sampler,
        sample_seconds=0.25,
        wait=waited.append,
        now=lambda: 100.15,  # loading took 0.15 s of the window
    )
    assert waited == [pytest.approx(0.1)]
    assert out.cpu_percent == pytest.approx(80.0)


def test_a_probe_old_enough_means_no_wait_at_all() -> None:
    p = proc(5000, cpu_time=10.0)
    sampler = CpuSampler()
    sampler.seed(CpuProbe(taken_at=100.0, samples={5000: (p.create_time, 10.0)}))
    waited: list[float] = []
    [out] = sampled(
        lambda: ([p.model_copy(update={"cpu_time": 10.4})], 100.4),
        sampler,
        sample_seconds=0.25,
        wait=waited.append,
    )
    assert waited == []
    assert out.cpu_percent == pytest.approx(100.0)
