"""Both readers against the live Linux process table, on processes this test spawned."""

from __future__ import annotations

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
