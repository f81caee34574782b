"""Both readers against the live Linux process table, on processes this test spawned."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.platform import ProcfsReader, PsutilReader, default_reader
from reaper_engine.models import ProcessInfo, ProcessState
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the Linux /proc"
)

TOLERANCE = 0.05


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _state_letter(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2]


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three sleepers (one with an awkward argv) and one zombie; always killed and reaped."""
    spawned: list[subprocess.Popen[bytes]] = []
    try:
        spawned.append(_spawn(["sleep", "30"]))
        spawned.append(_spawn(["sleep", "31"]))
        # exec -a gives argv[0] a space; comm stays "sleep"
        spawned.append(_spawn(["bash", "-c", "exec -a 'my sleeper' sleep 32"]))
        zombie = _spawn(["true"])
        spawned.append(zombie)
        # Not waited for: it stays a zombie until teardown.
        wait_until(lambda: _state_letter(zombie.pid) == "Z", timeout=10, what="a zombie")
        # Both readers must see the argv after bash has exec'd sleep.
        cmdline = Path(f"/proc/{spawned[2].pid}/cmdline")
        wait_until(
            lambda: cmdline.read_bytes() == b"my sleeper\x0032\x00",
            timeout=10,
            what="bash to exec sleep",
        )
        yield spawned
    finally:
        for child in spawned:  # only our own children, by their Popen handle
            if child.poll() is None:
                child.kill()
        for child in spawned:
            child.wait(timeout=10)


def _by_pid(processes: tuple[ProcessInfo, ...]) -> dict[int, ProcessInfo]:
    return {p.pid: p for p in processes}


def test_both_readers_list_our_children_identically(children):
    procfs = _by_pid(ProcfsReader().read().processes)
    portable = _by_pid(PsutilReader().read().processes)
    for child in children:
        a, b = procfs[child.pid], portable[child.pid]
        assert (a.pid, a.ppid, a.uid, a.user, a.cmdline, a.name, a.status) == (
            b.pid,
            b.ppid,
            b.uid,
            b.user,
            b.cmdline,
            b.name,
            b.status,
        )
        assert abs(a.create_time - b.create_time) <= TOLERANCE
        assert (a.pgid, a.sid) == (b.pgid, b.sid) == (child.pid, child.pid)
        assert not a.is_kernel_thread
        assert not b.is_kernel_thread

    sleeper, _, renamed, zombie = (procfs[c.pid] for c in children)
    assert sleeper.cmdline == ("sleep", "30")
    assert sleeper.name == "sleep"
    assert sleeper.status is ProcessState.SLEEPING
    assert sleeper.exe is not None
    assert sleeper.exe.endswith("sleep")
    assert renamed.cmdline == ("my sleeper", "32")
    assert renamed.name == "sleep"
    assert zombie.status is ProcessState.ZOMBIE
    assert portable[zombie.pid].status is ProcessState.ZOMBIE
    assert zombie.cmdline == ()


# -- field by field, on our own children ----------------------------------------------------

# cpu_time: both readers compute (utime + stime) / CLK_TCK from /proc/PID/stat (psutil as
# utime/hz + stime/hz). Our children sleep, so between the two reads their times move by at
# most one tick (a child still finishing its start-up); the float sums differ by rounding.
CPU_TIME_TOLERANCE = 1 / os.sysconf("SC_CLK_TCK") + 1e-9


def rss_tolerance() -> int:
    """How far the two readers' rss may legitimately differ for a process that is idle.

    They read different kernel counters. ProcfsReader takes field 24 of /proc/PID/stat,
    which the kernel computes with get_mm_rss(): percpu_counter_read_positive() of the file,
    anon and shmem rss counters -- the global count only, without the per-CPU deltas not
    yet folded into it. psutil takes field 2 of /proc/PID/statm, which since Linux 6.16
    (commit "mm: fix the inaccurate memory statistics issue for users", 2025) adds the
    per-CPU deltas in (get_mm_counter_sum(), as /proc/PID/status VmRSS does): it equals the
    page-table walk of /proc/PID/smaps_rollup. The difference does not shrink with time: a
    delta is folded only when it reaches the batch, so an idle process keeps it (a quiet
    `sleep` here: stat 1720 kB, statm = VmRSS = smaps_rollup Rss = 1788 kB on every read).
    Each per-CPU delta is below the batch (percpu_counter_batch = max(32, 2 * online CPUs)
    pages), for three counters on every CPU. Before 6.2 (SPLIT_RSS_COUNTING) and from 6.2
    to 6.15, stat and statm read the same approximate value and agree exactly; the bound
    covers every version.
    """
    cpus = os.cpu_count() or 1
    batch_pages = max(32, 2 * cpus)
    return 3 * cpus * batch_pages * os.sysconf("SC_PAGE_SIZE")


def test_both_readers_agree_field_by_field_on_our_children(children):
    procfs = _by_pid(ProcfsReader().read().processes)
    portable = _by_pid(PsutilReader().read().processes)
    for child in children:
        a, b = procfs[child.pid], portable[child.pid]
        # Fixed for the life of these processes: identical.
        assert (a.name, a.exe, a.cmdline, a.status) == (b.name, b.exe, b.cmdline, b.status)
        assert abs(a.cpu_time - b.cpu_time) <= CPU_TIME_TOLERANCE, (a.cpu_time, b.cpu_time)
        assert abs(a.rss - b.rss) <= rss_tolerance(), (a.rss, b.rss)

    sleepers = [procfs[c.pid] for c in children[:3]]
    for sleeper in sleepers:
        assert sleeper.exe is not None
        assert sleeper.exe.endswith("/sleep")
        assert sleeper.rss > 0
        # A sleeper, a few hundred ms old, has used far less than a second of CPU.
        assert sleeper.cpu_time < 1.0
        assert portable[sleeper.pid].rss > 0
    zombie_a, zombie_b = procfs[children[3].pid], portable[children[3].pid]
    # A zombie has no memory map left: no executable, no memory (both readers).
    assert (zombie_a.exe, zombie_a.rss) == (zombie_b.exe, zombie_b.rss) == (None, 0)


def _raw_rss(pid: int) -> tuple[int, int]:
    """(rss from /proc/PID/stat field 24, resident from /proc/PID/statm field 2), in bytes."""
    page = os.sysconf("SC_PAGE_SIZE")
    stat = Path(f"/proc/{pid}/stat").read_text()
    stat_rss = int(stat[stat.rfind(")") + 2 :].split()[21]) * page
    statm_rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return stat_rss, statm_rss


def test_each_reader_reads_rss_from_its_own_kernel_counter(children):
    """Pins down where the rss difference above comes from (see `rss_tolerance`)."""
    sleeper = children[0].pid

    def stable_sample() -> tuple[tuple[int, int], ProcessInfo, ProcessInfo] | None:
        before = _raw_rss(sleeper)
        procfs, portable = ProcfsReader().get(sleeper), PsutilReader().get(sleeper)
        # Only a sample during which neither counter moved (the sleeper is idle once its
        # loader is done) says which counter each reader used.
        if procfs is None or portable is None or _raw_rss(sleeper) != before:
            return None
        return before, procfs, portable

    sample = wait_until(stable_sample, timeout=10, what="an idle sleeper")
    assert isinstance(sample, tuple)
    (stat_rss, statm_rss), procfs, portable = sample
    assert procfs.rss == stat_rss
    assert portable.rss == statm_rss
    assert abs(stat_rss - statm_rss) <= rss_tolerance()


def test_readers_agree_over_the_whole_table():
    procfs_snapshot = ProcfsReader().read()
    portable_snapshot = PsutilReader().read()
    procfs, portable = _by_pid(procfs_snapshot.processes), _by_pid(portable_snapshot.processes)
    common = procfs.keys() & portable.keys()
    assert len(common) >= 0.9 * max(len(procfs), len(portable))
    agreeing = sum(
        1
        for pid in common
        if procfs[pid].ppid == portable[pid].ppid
        and procfs[pid].uid == portable[pid].uid
        # A kworker's name carries the workqueue it is running right now
        # ("kworker/1:2-events"): it changes between two reads. Any other name is stable.
        and (procfs[pid].is_kernel_thread or procfs[pid].name == portable[pid].name)
        and abs(procfs[pid].create_time - portable[pid].create_time) <= TOLERANCE
    )
    assert agreeing >= 0.99 * len(common)
    kernel = {pid for pid in common if procfs[pid].is_kernel_thread}
    assert kernel == {pid for pid in common if portable[pid].is_kernel_thread}
    assert procfs[1].ppid == 0
    assert not procfs[1].is_kernel_thread


@pytest.mark.parametrize("reader_class", [ProcfsReader, PsutilReader])
def test_get(reader_class, children):
    reader = reader_class()
    child = children[0]
    info = reader.get(child.pid)
    assert info is not None
    assert info.pid == child.pid
    assert info.cmdline == ("sleep", "30")
    assert reader.get(_pid_that_cannot_exist()) is None


@pytest.mark.parametrize("reader_class", [ProcfsReader, PsutilReader])
def test_get_of_a_reaped_child_is_none(reader_class):
    child = _spawn(["true"])
    child.wait(timeout=10)
    assert reader_class().get(child.pid) is None  # unless the pid was reused that instant


@pytest.mark.parametrize("reader_class", [ProcfsReader, PsutilReader])
def test_snapshot_of_the_live_table(reader_class):
    before = time.time()
    snapshot = reader_class().read()
    assert before <= snapshot.taken_at <= time.time()
    assert len(snapshot.processes) > 1
    assert sum(snapshot.skipped.values()) <= 0.05 * len(snapshot.processes)


def test_default_reader_is_procfs_on_linux():
    assert isinstance(default_reader(), ProcfsReader)


def test_default_reader_falls_back_to_psutil_without_procfs(tmp_path):
    assert isinstance(default_reader(tmp_path / "no-proc"), PsutilReader)


def _pid_that_cannot_exist() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
