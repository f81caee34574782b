"""Raising the reaper's own CPU share, so that it still gets to run on a machine pegged by loops.

Under 20 busy loops on 2 cores a plain scan is ~10x slower: the reaper gets a ~1/21 share of
the CPU like every other runnable entity. Which knob changes that share depends on how the
Linux scheduler groups tasks:

* **Autogroup** (``CONFIG_SCHED_AUTOGROUP``, on by default on desktop and most server kernels):
  every session (``setsid``) is one scheduling entity, and the CPU is divided between *sessions*
  first. Runaway loops started from other terminals, CI jobs or ``start_new_session`` children
  are other sessions, so only the autogroup's nice (``/proc/self/autogroup``) changes the
  reaper's share against them: a task nice alone was measured to make no difference
  (docs/benchmarks.md). The autogroup belongs to the whole *session*: boosting it boosts every
  process in the reaper's session, and the value outlives the reaper if the session does.
  Run the daemon in a session of its own, and undo a one-shot boost (`restore_cpu_share`,
  `boosted_cpu_share`).
* **Task nice** (``setpriority``) decides the share among tasks of the same group: loops in the
  reaper's own session, or every task when autogroup is off. Both are applied.
* **cgroups**: autogroups only exist in the root cpu cgroup. A process in a non-root cpu cgroup
  (a systemd service with CPU accounting, a container) competes with the weight of its cgroup
  (``cpu.weight`` / ``cpu.shares``). That weight is not written here: it is shared by every
  process of the unit or container and owned by its manager (systemd rewrites it on reload), so
  it belongs in the unit (``CPUWeight=``) or the container's settings. The result says so.

Lowering a nice value needs ``CAP_SYS_NICE`` (or ``RLIMIT_NICE``); without it the result says
what was denied and nothing is raised. No I/O happens at import.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

from reaper_engine.log import get_logger

log = get_logger(__name__)

MIN_NICE: Final = -20
MAX_NICE: Final = 19

# Without CAP_SYS_ADMIN the kernel accepts one autogroup nice write per 100 ms system-wide
# (proc_sched_autogroup_set_nice returns EAGAIN inside that window).
_AUTOGROUP_RETRIES: Final = 3
_AUTOGROUP_RETRY_WAIT: Final = 0.11

Mechanism = Literal["autogroup", "task_nice", "cgroup", "nice"]
Outcome = Literal["applied", "unchanged", "denied", "unsupported", "not_effective", "failed"]
"""``applied``: raised to the target. ``unchanged``: already at or above it (not lowered).
``denied``: no permission. ``unsupported``: the mechanism does not exist here.
``not_effective``: exists but would not change the share here (so not written).
``failed``: any other error."""

_GOOD: Final = frozenset({"applied", "unchanged"})

_OS_NICE: Final[Callable[[int], int] | None] = getattr(os, "nice", None)  # absent on Windows


@dataclass(frozen=True, slots=True)
class BoostStep:
    """One mechanism that was considered: values are nice values (lower is more CPU)."""

    mechanism: Mechanism
    target: str  # the file or call that was used, for the log and the docs
    outcome: Outcome
    previous: int | None = None
    new: int | None = None
    reason: str | None = None  # why not, when the outcome is not applied/unchanged

    @property
    def ok(self) -> bool:
        return self.outcome in _GOOD


@dataclass(frozen=True, slots=True)
class BoostResult:
    """What `boost_own_cpu_share` tried, what took effect, and why not when it did not."""

    requested: int
    steps: tuple[BoostStep, ...]

    @property
    def tried(self) -> tuple[Mechanism, ...]:
        return tuple(s.mechanism for s in self.steps)

    @property
    def succeeded(self) -> tuple[Mechanism, ...]:
        """Mechanisms now at (or better than) the requested value."""
        return tuple(s.mechanism for s in self.steps if s.ok)

    @property
    def boosted(self) -> bool:
        """True if anything was actually changed."""
        return any(s.outcome == "applied" for s in self.steps)

    @property
    def reason(self) -> str | None:
        """Why not, for every mechanism that did not succeed; None if all did."""
        reasons = [f"{s.mechanism}: {s.reason}" for s in self.steps if not s.ok and s.reason]
        return "; ".join(reasons) or None

    def step(self, mechanism: Mechanism) -> BoostStep | None:
        return next((s for s in self.steps if s.mechanism == mechanism), None)


class AutogroupFormatError(ValueError):
    """/proc/PID/autogroup is not ``/autogroup-N nice X``."""


def parse_autogroup(text: str) -> tuple[int, int]:
    """(autogroup id, nice) from ``/autogroup-N nice X`` (proc_sched_autogroup_show_task)."""
    parts = text.split()
    if len(parts) != 3 or not parts[0].startswith("/autogroup-") or parts[1] != "nice":
        raise AutogroupFormatError(f"unexpected autogroup record: {text!r}")
    try:
        group, nice = int(parts[0].removeprefix("/autogroup-")), int(parts[2])
    except ValueError:
        raise AutogroupFormatError(f"unexpected autogroup record: {text!r}") from None
    if not MIN_NICE <= nice <= MAX_NICE:
        raise AutogroupFormatError(f"autogroup nice out of range: {text!r}")
    return group, nice


def _get_task_nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _set_task_nice(tid: int, nice: int) -> None:
    os.setpriority(os.PRIO_PROCESS, tid, nice)


def _write_proc_file(path: Path, data: bytes) -> None:
    # One write() call: procfs parses each write on its own, so it must not be split.
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _denied_reason(exc: OSError, what: str) -> str:
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return f"{what} not permitted ({code}): a lower nice needs CAP_SYS_NICE or RLIMIT_NICE"


class CpuShareBooster:
    """`boost_own_cpu_share` with every path and system call injectable, for tests.

    ``proc_root`` replaces ``/proc`` (``self/autogroup``, ``self/cgroup``, ``self/mounts``,
    ``self/task``, ``sys/kernel/sched_autogroup_enabled``) and ``autogroup_path`` the autogroup
    file alone; ``write_file`` stands in for the kernel when a test writes that file;
    ``get_nice``/``set_nice`` replace ``getpriority``/``setpriority`` for one thread id;
    ``nice`` replaces ``os.nice`` (non-Linux).
    """

    def __init__(
        self,
        *,
        proc_root: Path = Path("/proc"),
        platform: str = sys.platform,
        get_nice: Callable[[int], int] = _get_task_nice,
        set_nice: Callable[[int, int], None] = _set_task_nice,
        nice: Callable[[int], int] | None = _OS_NICE,
        sleep: Callable[[float], object] = time.sleep,
        autogroup_path: Path | None = None,
        write_file: Callable[[Path, bytes], None] = _write_proc_file,
    ) -> None:
        self.proc_root = proc_root
        self.autogroup_path = autogroup_path or proc_root / "self" / "autogroup"
        self._write_file = write_file
        self._platform = platform
        self._get_nice = get_nice
        self._set_nice = set_nice
        self._nice = nice
        self._sleep = sleep

    # -- public ------------------------------------------------------------------------------

    def boost(
        self, nice: int = -10, *, task_nice: bool = True, skip_autogroup: str | None = None
    ) -> BoostResult:
        """Raise this process's CPU share to ``nice``; never lowers it, never raises an error.

        ``skip_autogroup`` leaves the session-wide autogroup alone and records why (a session
        that is someone's terminal, say).
        """
        _check_range(nice)
        if self._platform.startswith("linux"):
            steps = [
                self._autogroup(nice)
                if skip_autogroup is None
                else BoostStep(
                    "autogroup", str(self.autogroup_path), "not_effective", reason=skip_autogroup
                )
            ]
            if task_nice:
                steps.append(self._task_nice(nice))
        else:
            steps = [self._portable_nice(nice)]
        result = BoostResult(requested=nice, steps=tuple(steps))
        _log(result)
        return result

    def restore(self, result: BoostResult) -> BoostResult:
        """Put back the previous values of the steps that `boost` applied.

        Raising a nice value needs no privilege, so this only fails if the mechanism vanished.
        """
        steps: list[BoostStep] = []
        for step in result.steps:
            if step.outcome != "applied" or step.previous is None:
                continue
            if step.mechanism == "autogroup":
                steps.append(self._write_autogroup(step.previous))
            elif step.mechanism == "task_nice":
                steps.append(self._set_threads(step.previous))
            elif step.mechanism == "nice":
                steps.append(self._portable_nice(step.previous, allow_lower=True))
        restored = BoostResult(requested=result.requested, steps=tuple(steps))
        log.info("cpu_boost_restored", steps=[_describe(s) for s in steps])
        return restored

    # -- Linux: the session's autogroup ------------------------------------------------------

    def _autogroup(self, nice: int) -> BoostStep:
        target = str(self.autogroup_path)
        try:
            text = self.autogroup_path.read_text(encoding="ascii")
            if not text.strip():
                # The kernel prints nothing for the default autogroup (the root task group):
                # this session was created before autogroups were on, or by init itself.
                # Its weight cannot be changed (EINVAL).
                return BoostStep(
                    "autogroup",
                    target,
                    "not_effective",
                    reason="this session has no autogroup of its own (the kernel's default "
                    "group); run the reaper in its own session (setsid) to get one",
                )
            _, current = parse_autogroup(text)
        except FileNotFoundError:
            return BoostStep(
                "autogroup",
                target,
                "unsupported",
                reason="no /proc/self/autogroup: kernel built without CONFIG_SCHED_AUTOGROUP",
            )
        except (OSError, ValueError) as exc:  # unreadable or malformed: don't guess
            return BoostStep("autogroup", target, "failed", reason=f"cannot read: {exc}")
        step = BoostStep("autogroup", target, "unchanged", previous=current, new=current)
        why_not = self._autogroup_not_effective()
        if why_not is not None:
            return replace(step, outcome="not_effective", new=None, reason=why_not)
        if current <= nice:
            return step
        written = self._write_autogroup(nice)
        return replace(written, previous=current)

    def _write_autogroup(self, nice: int) -> BoostStep:
        target = str(self.autogroup_path)
        data = str(nice).encode("ascii")
        for attempt in range(_AUTOGROUP_RETRIES):
            try:
                self._write_file(self.autogroup_path, data)
                break
            except FileNotFoundError:
                return BoostStep("autogroup", target, "unsupported", reason="file vanished")
            except PermissionError as exc:
                return BoostStep(
                    "autogroup", target, "denied", reason=_denied_reason(exc, "autogroup write")
                )
            except BlockingIOError:  # EAGAIN: the kernel's 100 ms rate limit; wait it out
                if attempt == _AUTOGROUP_RETRIES - 1:
                    return BoostStep(
                        "autogroup", target, "failed", reason="EAGAIN (write rate limit)"
                    )
                self._sleep(_AUTOGROUP_RETRY_WAIT)
            except OSError as exc:  # EINVAL, an LSM veto
                return BoostStep("autogroup", target, "failed", reason=f"write failed: {exc}")
        # Read back: the kernel is the authority on what took effect.
        try:
            _, now = parse_autogroup(self.autogroup_path.read_text(encoding="ascii"))
        except (OSError, ValueError) as exc:
            return BoostStep("autogroup", target, "failed", reason=f"cannot read back: {exc}")
        if now != nice:
            return BoostStep(
                "autogroup", target, "failed", new=now, reason=f"wrote {nice}, reads {now}"
            )
        return BoostStep("autogroup", target, "applied", new=now)

    def _autogroup_not_effective(self) -> str | None:
        """Why the autogroup nice would not change our share here, or None if it would."""
        enabled = self.proc_root / "sys" / "kernel" / "sched_autogroup_enabled"
        try:
            if enabled.read_text(encoding="ascii").strip() == "0":
                return "autogroup disabled (kernel.sched_autogroup_enabled = 0 or noautogroup)"
        except OSError:
            pass  # no sysctl to read: the autogroup file exists, assume it is in use
        cgroup = self._cpu_cgroup()
        if cgroup is not None:
            return (
                f"in cpu cgroup {cgroup}: autogroups apply only in the root cgroup; the "
                "cgroup's weight decides the share (set CPUWeight= in the unit, or the "
                "container's cpu shares)"
            )
        return None

    def _cpu_cgroup(self) -> str | None:
        """The non-root cgroup whose weight governs our CPU share, or None (root: autogroup)."""
        try:
            lines = (self.proc_root / "self" / "cgroup").read_text(encoding="utf-8").splitlines()
        except OSError:
            return None
        unified: str | None = None
        for line in lines:
            _, controllers, path = [*line.split(":", 2), "", ""][:3]
            if "cpu" in controllers.split(","):  # cgroup v1 cpu hierarchy
                return None if path == "/" else f"v1 cpu:{path}"
            if controllers == "":
                unified = path
        if unified is None:
            return None
        # cgroup v2: a cgroup is a scheduling group only if its parent enabled the cpu
        # controller for it, which is exactly when it has a cpu.weight file. Inside a cgroup
        # namespace the path reads "/" but the namespace root is a real, weighted cgroup.
        for mount in self._cgroup2_mounts():
            weight = Path(mount + unified.rstrip("/")) / "cpu.weight"
            if weight.exists():
                return f"v2 {unified} ({weight})"
        return None

    def _cgroup2_mounts(self) -> list[str]:
        try:
            mounts = (self.proc_root / "self" / "mounts").read_text(encoding="utf-8")
        except OSError:
            return []
        return [
            f[1]
            for f in (m.split() for m in mounts.splitlines())
            if len(f) > 2 and f[2] == "cgroup2"
        ]

    # -- Linux: the nice value of every thread -----------------------------------------------

    def _task_nice(self, nice: int) -> BoostStep:
        try:
            current = self._get_nice(0)
        except OSError as exc:
            return BoostStep("task_nice", "setpriority", "failed", reason=f"getpriority: {exc}")
        if current <= nice:
            return BoostStep("task_nice", "setpriority", "unchanged", previous=current, new=current)
        return replace(self._set_threads(nice), previous=current)

    def _set_threads(self, nice: int) -> BoostStep:
        # Linux nice is per thread: setpriority(PRIO_PROCESS, 0) changes only the caller.
        # Threads started later inherit the value; those already running must be set too.
        target = "setpriority"
        for tid in self._thread_ids():
            try:
                self._set_nice(tid, nice)
            except ProcessLookupError:  # a thread that exited meanwhile
                continue
            except PermissionError as exc:
                return BoostStep(
                    "task_nice", target, "denied", reason=_denied_reason(exc, "setpriority")
                )
            except OSError as exc:
                return BoostStep("task_nice", target, "failed", reason=f"setpriority: {exc}")
        return BoostStep("task_nice", target, "applied", new=nice)

    def _thread_ids(self) -> list[int]:
        try:
            tids = [int(t) for t in os.listdir(self.proc_root / "self" / "task") if t.isdigit()]
        except OSError:
            tids = []
        return tids or [0]

    # -- elsewhere ---------------------------------------------------------------------------

    def _portable_nice(self, nice: int, *, allow_lower: bool = False) -> BoostStep:
        if self._nice is None:
            return BoostStep("nice", "os.nice", "unsupported", reason="no os.nice on this OS")
        try:
            current = self._nice(0)
            if current <= nice and not allow_lower:
                return BoostStep("nice", "os.nice", "unchanged", previous=current, new=current)
            new = self._nice(nice - current)
        except PermissionError as exc:
            return BoostStep("nice", "os.nice", "denied", reason=_denied_reason(exc, "os.nice"))
        except OSError as exc:
            return BoostStep("nice", "os.nice", "failed", reason=f"os.nice: {exc}")
        return BoostStep("nice", "os.nice", "applied", previous=current, new=new)


def boost_own_cpu_share(*, nice: int = -10, skip_autogroup: str | None = None) -> BoostResult:
    """Give this process (and, on Linux, its session's autogroup) nice ``nice``, where permitted.

    Never lowers a share that is already higher and never raises for a missing mechanism or a
    missing privilege: the result says what was tried, what took effect and why not.
    ``nice`` outside -20..19 is a programming error (ValueError). ``skip_autogroup``: see
    `CpuShareBooster.boost`.
    """
    return CpuShareBooster().boost(nice, skip_autogroup=skip_autogroup)


def restore_cpu_share(result: BoostResult) -> BoostResult:
    """Undo `boost_own_cpu_share` (the autogroup's value outlives the process)."""
    return CpuShareBooster().restore(result)


@contextlib.contextmanager
def boosted_cpu_share(*, nice: int = -10) -> Iterator[BoostResult]:
    """Boost for the duration of a block (a one-shot scan), then restore the previous values."""
    booster = CpuShareBooster()
    result = booster.boost(nice)
    try:
        yield result
    finally:
        booster.restore(result)


def _check_range(nice: int) -> None:
    if not MIN_NICE <= nice <= MAX_NICE:
        raise ValueError(f"nice must be in {MIN_NICE}..{MAX_NICE}, got {nice}")


def _describe(step: BoostStep) -> dict[str, object]:
    return {
        "mechanism": step.mechanism,
        "outcome": step.outcome,
        "previous": step.previous,
        "new": step.new,
        "reason": step.reason,
    }


def _log(result: BoostResult) -> None:
    steps = [_describe(s) for s in result.steps]
    if result.succeeded:
        log.info("cpu_boost", requested=result.requested, steps=steps)
    if not all(s.ok for s in result.steps):
        log.warning(
            "cpu_boost_unavailable",
            requested=result.requested,
            reason=result.reason,
            steps=steps,
        )
