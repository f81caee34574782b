"""boost_own_cpu_share: the autogroup file and thread nice over a fake /proc, then once for real.

Nothing here changes the test runner's own priority: the unit tests inject every system call,
and the live test boosts a child process in a session (so an autogroup) of its own.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agents.platform.priority import (
    AutogroupFormatError,
    BoostResult,
    CpuShareBooster,
    parse_autogroup,
)

REPO = Path(__file__).resolve().parents[2]


class FakeKernel:
    """Stands in for the kernel behind /proc/self/autogroup and setpriority."""

    def __init__(self, proc: Path, *, autogroup_nice: int = 0, task_nice: int = 0) -> None:
        self.proc = proc
        self.autogroup = proc / "self" / "autogroup"
        self.autogroup.parent.mkdir(parents=True, exist_ok=True)
        self.autogroup.write_text(f"/autogroup-42 nice {autogroup_nice}\n")
        (proc / "self" / "task").mkdir()
        for tid in (100, 101):
            (proc / "self" / "task" / str(tid)).mkdir()
        self.threads = {100: task_nice, 101: task_nice}
        self.deny: OSError | None = None
        self.writes: list[bytes] = []

    def write_file(self, path: Path, data: bytes) -> None:
        # What proc_sched_autogroup_set_nice does: parse one number, check it, show it back.
        self.writes.append(data)
        if self.deny is not None:
            raise self.deny
        path.write_text(f"/autogroup-42 nice {int(data)}\n")

    def get_nice(self, tid: int) -> int:
        return self.threads[100 if tid == 0 else tid]

    def set_nice(self, tid: int, nice: int) -> None:
        if self.deny is not None:
            raise PermissionError(errno.EACCES, "Permission denied")
        self.threads[tid] = nice

    def booster(self, **overrides: object) -> CpuShareBooster:
        kwargs: dict[str, object] = {
            "proc_root": self.proc,
            "platform": "linux",
            "get_nice": self.get_nice,
            "set_nice": self.set_nice,
            "write_file": self.write_file,
            "sleep": lambda _: None,
        }
        return CpuShareBooster(**{**kwargs, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path / "proc")


# -- parsing -----------------------------------------------------------------------------------


def test_parse_autogroup_reads_the_kernel_format():
    assert parse_autogroup("/autogroup-6214 nice 0\n") == (6214, 0)
    assert parse_autogroup("/autogroup-1 nice -10") == (1, -10)


@pytest.mark.parametrize(
    "text", ["", "nice 0", "/autogroup-x nice 0", "/autogroup-1 nice", "/autogroup-1 nice 40"]
)
def test_parse_autogroup_refuses_anything_else(text: str):
    with pytest.raises(AutogroupFormatError):
        parse_autogroup(text)


# -- writing -----------------------------------------------------------------------------------


def test_boost_writes_the_autogroup_and_every_thread(kernel: FakeKernel):
    result = kernel.booster().boost(-10)

    assert kernel.writes == [b"-10"]
    assert kernel.autogroup.read_text() == "/autogroup-42 nice -10\n"
    assert kernel.threads == {100: -10, 101: -10}
    assert result.tried == ("autogroup", "task_nice")
    assert result.succeeded == ("autogroup", "task_nice")
    assert result.boosted
    assert result.reason is None
    autogroup = result.step("autogroup")
    assert autogroup is not None
    assert (autogroup.outcome, autogroup.previous, autogroup.new) == ("applied", 0, -10)


def test_restore_puts_the_previous_values_back(kernel: FakeKernel):
    booster = kernel.booster()
    restored = booster.restore(booster.boost(-5))
    assert kernel.autogroup.read_text() == "/autogroup-42 nice 0\n"
    assert kernel.threads == {100: 0, 101: 0}
    assert [s.outcome for s in restored.steps] == ["applied", "applied"]


def test_a_share_that_is_already_higher_is_not_lowered(tmp_path: Path):
    kernel = FakeKernel(tmp_path / "proc", autogroup_nice=-15, task_nice=-12)
    result = kernel.booster().boost(-10)
    assert kernel.writes == []
    assert kernel.threads == {100: -12, 101: -12}
    assert [s.outcome for s in result.steps] == ["unchanged", "unchanged"]
    assert result.succeeded == ("autogroup", "task_nice")
    assert not result.boosted
    assert kernel.booster().restore(result).steps == ()


def test_permission_denied_is_reported_and_logged_not_raised(kernel: FakeKernel):
    kernel.deny = PermissionError(errno.EPERM, "Operation not permitted")
    with capture_logs() as logs:
        result = kernel.booster().boost(-10)

    assert [s.outcome for s in result.steps] == ["denied", "denied"]
    assert result.succeeded == ()
    assert not result.boosted
    assert result.reason is not None
    assert "CAP_SYS_NICE" in result.reason
    assert kernel.autogroup.read_text() == "/autogroup-42 nice 0\n"  # untouched
    [event] = [e for e in logs if e["event"] == "cpu_boost_unavailable"]
    assert event["log_level"] == "warning"
    assert event["reason"] == result.reason


def test_missing_autogroup_file_means_no_autogroup_support(kernel: FakeKernel):
    kernel.autogroup.unlink()  # CONFIG_SCHED_AUTOGROUP=n
    result = kernel.booster().boost(-10)
    autogroup = result.step("autogroup")
    assert autogroup is not None
    assert autogroup.outcome == "unsupported"
    assert "CONFIG_SCHED_AUTOGROUP" in (autogroup.reason or "")
    assert kernel.writes == []
    assert result.succeeded == ("task_nice",)  # the task nice still helps within our group


def test_the_autogroup_path_alone_is_injectable(tmp_path: Path, kernel: FakeKernel):
    elsewhere = tmp_path / "autogroup"
    elsewhere.write_text("/autogroup-9 nice 3\n")
    result = kernel.booster(autogroup_path=elsewhere).boost(-1, task_nice=False)
    assert result.tried == ("autogroup",)
    assert elsewhere.read_text() == "/autogroup-42 nice -1\n"


def test_rate_limited_write_is_retried(kernel: FakeKernel):
    # Without CAP_SYS_ADMIN the kernel takes one autogroup write per 100 ms (EAGAIN).
    attempts: list[bytes] = []

    def busy_then_ok(path: Path, data: bytes) -> None:
        attempts.append(data)
        if len(attempts) < 2:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        kernel.write_file(path, data)

    booster = kernel.booster(write_file=busy_then_ok)
    result = booster.boost(-10, task_nice=False)
    assert len(attempts) == 2
    assert result.succeeded == ("autogroup",)


def test_malformed_autogroup_file_is_not_written(kernel: FakeKernel):
    kernel.autogroup.write_text("garbage\n")
    result = kernel.booster().boost(-10, task_nice=False)
    assert [s.outcome for s in result.steps] == ["failed"]
    assert kernel.writes == []


def test_the_default_autogroup_is_not_written(kernel: FakeKernel):
    # The kernel prints nothing for the default group; writing it would fail with EINVAL.
    kernel.autogroup.write_text("")
    result = kernel.booster().boost(-10)
    assert [s.outcome for s in result.steps] == ["not_effective", "applied"]
    assert "setsid" in (result.steps[0].reason or "")
    assert kernel.writes == []


def test_disabled_autogroup_is_not_written(kernel: FakeKernel):
    sysctl = kernel.proc / "sys" / "kernel" / "sched_autogroup_enabled"
    sysctl.parent.mkdir(parents=True)
    sysctl.write_text("0\n")
    result = kernel.booster().boost(-10)
    assert [s.outcome for s in result.steps] == ["not_effective", "applied"]
    assert kernel.writes == []


def test_in_a_cpu_cgroup_the_autogroup_does_not_apply(kernel: FakeKernel, tmp_path: Path):
    # cgroup v2 with the cpu controller enabled for our cgroup: it has a cpu.weight file.
    mount = tmp_path / "cgroup2"
    (mount / "system.slice" / "reaper.service").mkdir(parents=True)
    (mount / "system.slice" / "reaper.service" / "cpu.weight").write_text("100\n")
    (kernel.proc / "self" / "cgroup").write_text("0::/system.slice/reaper.service\n")
    (kernel.proc / "self" / "mounts").write_text(f"cgroup2 {mount} cgroup2 rw 0 0\n")
    result = kernel.booster().boost(-10)
    autogroup = result.step("autogroup")
    assert autogroup is not None
    assert autogroup.outcome == "not_effective"
    assert "CPUWeight=" in (autogroup.reason or "")
    assert kernel.writes == []


def test_root_v1_cpu_cgroup_keeps_the_autogroup(kernel: FakeKernel):
    (kernel.proc / "self" / "cgroup").write_text("4:memory:/x\n1:cpu,cpuacct:/\n0::/\n")
    assert kernel.booster().boost(-10).succeeded == ("autogroup", "task_nice")


def test_out_of_range_nice_is_a_programming_error(kernel: FakeKernel):
    with pytest.raises(ValueError, match="nice"):
        kernel.booster().boost(-21)


# -- other operating systems -------------------------------------------------------------------


def test_elsewhere_os_nice_is_used_where_allowed():
    calls: list[int] = []
    current = [0]

    def nice(increment: int) -> int:
        calls.append(increment)
        current[0] += increment
        return current[0]

    booster = CpuShareBooster(platform="darwin", nice=nice)
    result = booster.boost(-10)
    assert calls == [0, -10]
    assert result.tried == ("nice",)
    assert result.boosted

    def denied(increment: int) -> int:
        if increment < 0:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return 0

    refused = CpuShareBooster(platform="darwin", nice=denied).boost(-10)
    assert [s.outcome for s in refused.steps] == ["denied"]


def test_without_os_nice_the_boost_is_a_no_op():
    result = CpuShareBooster(platform="win32", nice=None).boost(-10)
    assert isinstance(result, BoostResult)
    assert [s.outcome for s in result.steps] == ["unsupported"]
    assert not result.boosted


# -- on this machine ---------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, os
    from agents.platform.priority import boost_own_cpu_share

    def autogroup():
        with open("/proc/self/autogroup") as f:
            return f.read().split()

    before = autogroup()
    result = boost_own_cpu_share(nice=-10)
    print(json.dumps({
        "before": before,
        "after": autogroup(),
        "task_nice": os.getpriority(os.PRIO_PROCESS, 0),
        "succeeded": list(result.succeeded),
        "reason": result.reason,
    }))
    """
)


@pytest.mark.skipif(
    not Path("/proc/self/autogroup").exists() or os.geteuid() != 0,
    reason="needs a kernel with autogroups, and root (CAP_SYS_NICE) to lower a nice value",
)
def test_live_boost_changes_the_childs_autogroup_nice():
    mine = Path("/proc/self/autogroup").read_text()
    # start_new_session: the child gets an autogroup of its own. In our session it would
    # boost our autogroup too (it belongs to the session, not the process).
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["before"][2] == "0"
    assert report["after"] == [report["before"][0], "nice", "-10"]
    assert report["task_nice"] == -10
    assert report["succeeded"] == ["autogroup", "task_nice"]
    assert report["reason"] is None
    # A different autogroup from ours. Ours may be the kernel's default group, which shows
    # as an empty file (a CI runner's session created by init).
    assert not mine.strip() or report["before"][0] != mine.split()[0]
    assert Path("/proc/self/autogroup").read_text() == mine  # ours untouched
