"""The two local signallers (pidfd and psutil) against real children this test spawned.

Every child is started by this module in a session of its own and is killed (only if not yet
reaped, through its own Popen handle) and reaped at teardown, pass or fail.

Most children are *pingers*: a Python process that records every catchable signal it
receives and, for each line written to its stdin, answers with the numbers it has recorded so
far. The answer is deterministic evidence: a signal sent before the ping is pending before the
ping's data arrives, and the child handles pending signals before its ``read`` returns, so a
signal that was delivered is always in the answer, and an answer at all proves the child was
not killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from agents.platform import ProcfsReader
from agents.platform.pidfd import PidfdSignaller, pidfd_supported
from agents.platform.psutil_signals import PsutilSignaller
from agents.terminator import Terminator
from agents.transports.base import SignalDelivery
from agents.transports.local import LocalTransportFactory
from reaper_engine.models import OS, HostSpec, KillOutcome, TransportKind
from reaper_engine.models.process import START_TIME_TOLERANCE
from reaper_engine.rules import RuleAction
from reaper_engine.safety import SafetySettings, policy_for
from reaper_engine.signals import Signal
from tests.factories import clock
from tests.fakes import finding_for
from tests.integration.conftest import alive, wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="POSIX signals and /proc: Linux host"
)

HAVE_PIDFD = pidfd_supported()
NO_PIDFD_REASON = (
    "pidfds unavailable here: os.pidfd_open/signal.pidfd_send_signal missing "
    "(Python < 3.9), or the kernel (< 5.3) or a seccomp profile refuses pidfd_open"
)
needs_pidfd = pytest.mark.skipif(not HAVE_PIDFD, reason=NO_PIDFD_REASON)

# The catchable signals of reaper_engine.signals.Signal, by their number on this OS.
CATCHABLE = (Signal.SIGHUP, Signal.SIGINT, Signal.SIGQUIT, Signal.SIGTERM)
NUMBER = {s: int(getattr(signal, s.value)) for s in Signal}

PINGER = """
import signal, sys
got = []
for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM"):
    signal.signal(getattr(signal, name), lambda number, frame: got.append(number))
sys.stdout.write("ready\\n")
sys.stdout.flush()
while sys.stdin.readline():
    sys.stdout.write(",".join(map(str, got)) + ".\\n")
    sys.stdout.flush()
"""

NOBODY = 65534  # the overflow uid: an unprivileged account that owns none of our processes
WAIT = 10.0  # seconds: the deadline for anything a child must do


@dataclass
class Child:
    popen: subprocess.Popen[bytes]
    create_time: float  # as the terminator's reader (procfs) sees it
    _buffer: bytes = field(default=b"")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def readline(self, timeout: float = WAIT) -> str:
        """One line of the child's stdout, or an AssertionError after ``timeout``."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"pid {self.pid}: no line within {timeout}s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError(f"pid {self.pid}: stdout closed (the child died)")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def received(self) -> list[int]:
        """The signal numbers the pinger has caught so far (and proof that it is alive)."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(b"?\n")
        self.popen.stdin.flush()
        answer = self.readline()
        assert answer.endswith("."), answer
        return [int(n) for n in answer[:-1].split(",") if n]

    def end_on_its_own(self) -> None:
        """Close its stdin: the pinger exits with status 0 (and stays a zombie until reaped)."""
        assert self.popen.stdin is not None
        self.popen.stdin.close()


class Spawner:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self._reader = ProcfsReader()

    def _start(self, args: list[str]) -> Child:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # never in pytest's process group or session
            bufsize=0,
        )
        child = Child(popen, create_time=0.0)
        self.children.append(child)
        info = self._reader.get(popen.pid)
        assert info is not None, "a child we have not reaped must be readable"
        child.create_time = info.create_time
        return child

    def pinger(self) -> Child:
        child = self._start([sys.executable, "-c", PINGER])
        assert child.readline() == "ready"  # its handlers are installed
        return child

    def sleeper(self) -> Child:
        """A child with the default disposition of every signal."""
        return self._start(["sleep", "300"])

    def reap_all(self) -> None:
        for child in self.children:
            # Popen.kill polls first and signals only a child it has not reaped, whose pid
            # therefore cannot have been reused: only our own child can receive it.
            if child.popen.returncode is None:
                child.popen.kill()
        for child in self.children:
            try:
                child.popen.wait(timeout=WAIT)
            finally:
                for pipe in (child.popen.stdin, child.popen.stdout):
                    if pipe is not None:
                        pipe.close()


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.reap_all()


def procfs_start_time_of(pid: int) -> float | None:
    """What LocalTransportFactory gives PidfdSignaller on Linux: the procfs reader's view."""
    info = ProcfsReader().get(pid)
    return info.create_time if info is not None else None


Signaller = PidfdSignaller | PsutilSignaller


@pytest.fixture(
    params=[pytest.param("pidfd", marks=needs_pidfd), "psutil"],
)
def signaller(request: pytest.FixtureRequest) -> Iterator[Signaller]:
    made: Signaller = (
        PidfdSignaller(procfs_start_time_of) if request.param == "pidfd" else PsutilSignaller()
    )
    try:
        yield made
    finally:
        made.close()


def open_pidfds() -> int:
    """How many pidfds this (pytest) process holds open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]":
                count += 1
        except OSError:  # the fd of the listing itself, closed by now
            continue
    return count


# -- delivery -------------------------------------------------------------------------------


def test_each_signal_reaches_the_live_child_it_names_and_no_other(
    signaller: Signaller, spawn: Spawner
) -> None:
    target, bystander = spawn.pinger(), spawn.pinger()
    for sig in CATCHABLE:
        assert signaller.send(target.pid, target.create_time, sig) is SignalDelivery.SENT
    assert target.received() == [NUMBER[s] for s in CATCHABLE]
    assert bystander.received() == []
    # Sending again through the same (cached, for pidfd) handle still reaches the same child.
    assert signaller.send(target.pid, target.create_time, Signal.SIGHUP) is SignalDelivery.SENT
    assert target.received() == [*(NUMBER[s] for s in CATCHABLE), NUMBER[Signal.SIGHUP]]


@pytest.mark.parametrize("sig", [Signal.SIGTERM, Signal.SIGKILL])
def test_an_ending_signal_ends_the_child_and_wait_gone_reports_it(
    signaller: Signaller, spawn: Spawner, sig: Signal
) -> None:
    target, bystander = spawn.sleeper(), spawn.pinger()
    # Alive: the wait runs out and says so.
    assert signaller.wait_gone(target.pid, target.create_time, 0.05) is False
    assert alive(target.pid)

    assert signaller.send(target.pid, target.create_time, sig) is SignalDelivery.SENT
    # The child exited (it is a zombie until we reap it, which counts as gone).
    assert signaller.wait_gone(target.pid, target.create_time, WAIT) is True
    assert target.popen.wait(timeout=WAIT) == -NUMBER[sig]  # killed by exactly that signal
    assert bystander.received() == []


def test_wait_gone_sees_a_child_that_exits_on_its_own(signaller: Signaller, spawn: Spawner) -> None:
    child = spawn.pinger()
    assert signaller.wait_gone(child.pid, child.create_time, 0.05) is False
    child.end_on_its_own()
    # Not reaped yet: the exit is seen through the fd (pidfd) or the zombie state (psutil).
    assert signaller.wait_gone(child.pid, child.create_time, WAIT) is True
    assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
    assert child.popen.wait(timeout=WAIT) == 0


# -- identity -------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [10.0, -10.0, 4 * START_TIME_TOLERANCE])
def test_a_start_time_mismatch_is_refused_and_the_child_is_not_signalled(
    signaller: Signaller, spawn: Spawner, offset: float
) -> None:
    child = spawn.pinger()
    wrong = child.create_time + offset  # as if the PID now named another process
    before = open_pidfds()
    for sig in (Signal.SIGHUP, Signal.SIGKILL):
        assert signaller.send(child.pid, wrong, sig) is SignalDelivery.GONE
    # "The process we mean is gone": answered at once, whatever the timeout.
    started = time.monotonic()
    assert signaller.wait_gone(child.pid, wrong, 30.0) is True
    assert time.monotonic() - started < 5.0
    assert open_pidfds() == before  # a refused pidfd is closed, not cached
    # Not signalled: it answers (so no SIGKILL reached it) and caught nothing.
    assert child.received() == []
    assert alive(child.pid)
    assert child.popen.poll() is None
    # The refusal was about the identity: with the right start time it is reached.
    assert signaller.send(child.pid, child.create_time, Signal.SIGHUP) is SignalDelivery.SENT
    assert child.received() == [NUMBER[Signal.SIGHUP]]


@pytest.mark.parametrize("signalled_before", [False, True], ids=["fresh", "cached-handle"])
def test_a_reaped_child_is_already_gone(
    signaller: Signaller, spawn: Spawner, signalled_before: bool
) -> None:
    child = spawn.pinger()
    if signalled_before:
        # The pidfd signaller now holds an fd pinned to this child: after the reap below,
        # the signal goes through that fd and the kernel answers ESRCH.
        assert signaller.send(child.pid, child.create_time, Signal.SIGHUP) is SignalDelivery.SENT
        assert child.received() == [NUMBER[Signal.SIGHUP]]
    # Let it live well beyond the tolerance first: a process that reuses its PID after the
    # exit then starts later than create_time + tolerance, so not even a reused PID can
    # match the identity below (and so no stranger can be signalled by this test).
    wait_until(
        lambda: time.time() - child.create_time > 10 * START_TIME_TOLERANCE,
        what="the child to age",
    )
    child.end_on_its_own()
    assert child.popen.wait(timeout=WAIT) == 0  # reaped: the PID is free
    assert signaller.send(child.pid, child.create_time, Signal.SIGTERM) is SignalDelivery.GONE
    assert signaller.send(child.pid, child.create_time, Signal.SIGKILL) is SignalDelivery.GONE
    assert signaller.wait_gone(child.pid, child.create_time, 30.0) is True


DENIED_SCRIPT = """
import json, os, sys
from agents.platform import ProcfsReader
from agents.platform.pidfd import PidfdSignaller, pidfd_supported
from agents.platform.psutil_signals import PsutilSignaller
from reaper_engine.signals import Signal

pid, create_time, nobody = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
reader = ProcfsReader()
reader.get(pid)  # loads what the reader needs while the interpreter's files are readable

def start_time_of(p):
    info = reader.get(p)
    return info.create_time if info is not None else None

signallers = {"psutil": PsutilSignaller()}
if pidfd_supported():
    signallers["pidfd"] = PidfdSignaller(start_time_of)
# Everything is imported: drop to nobody. With every uid non-zero the kernel clears all
# capabilities, so from here on this process is an ordinary unprivileged one.
os.setgroups([])
os.setresgid(nobody, nobody, nobody)
os.setresuid(nobody, nobody, nobody)
try:
    os.kill(pid, 0)
    sys.exit("still privileged after dropping to nobody")
except PermissionError:
    pass
out = {}
for name, signaller in signallers.items():
    out[name] = [signaller.send(pid, create_time, s).value for s in (Signal.SIGHUP, Signal.SIGKILL)]
    signaller.close()
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run a signaller as 'nobody'")
def test_a_child_of_another_user_is_denied(spawn: Spawner) -> None:
    """Both signallers, run as nobody against our (root's) child: the OS refuses, they say so."""
    child = spawn.pinger()
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", DENIED_SCRIPT, str(child.pid), repr(child.create_time), str(NOBODY)],
        cwd=repo,
        env={"PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/"},
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    expected = ["denied", "denied"]
    assert results == (
        {"psutil": expected, "pidfd": expected} if HAVE_PIDFD else {"psutil": expected}
    )
    assert child.received() == []  # nothing arrived, and it is alive


# -- pidfd specifics ------------------------------------------------------------------------


@needs_pidfd
def test_pidfd_rejects_a_live_pid_whose_start_time_differs(spawn: Spawner) -> None:
    """pidfd.py's check after pidfd_open: the fd was opened, the start time does not match."""
    child = spawn.pinger()
    looked_up: list[int] = []

    def start_time_of(pid: int) -> float | None:
        looked_up.append(pid)
        return procfs_start_time_of(pid)

    signaller = PidfdSignaller(start_time_of)
    before = open_pidfds()
    try:
        assert signaller.send(child.pid, child.create_time + 1.0, Signal.SIGKILL) is (
            SignalDelivery.GONE
        )
        # pidfd_open succeeded (the pid is live) and the comparison refused it.
        assert looked_up == [child.pid]
        assert open_pidfds() == before
        assert child.received() == []
    finally:
        signaller.close()
    assert child.popen.poll() is None


@needs_pidfd
def test_pidfd_refuses_when_the_start_time_cannot_be_read(spawn: Spawner) -> None:
    """A reader that finds nothing (the process vanished between open and look-up)."""
    child = spawn.pinger()
    signaller = PidfdSignaller(lambda _pid: None)
    before = open_pidfds()
    try:
        assert signaller.send(child.pid, child.create_time, Signal.SIGKILL) is (SignalDelivery.GONE)
        assert signaller.wait_gone(child.pid, child.create_time, 30.0) is True
        assert open_pidfds() == before
    finally:
        signaller.close()
    assert child.received() == []


@needs_pidfd
def test_pidfd_handles_are_released_on_exit_and_on_close(spawn: Spawner) -> None:
    first, second = spawn.sleeper(), spawn.pinger()
    signaller = PidfdSignaller(procfs_start_time_of)
    before = open_pidfds()
    try:
        assert signaller.send(first.pid, first.create_time, Signal.SIGKILL) is (SignalDelivery.SENT)
        assert signaller.send(second.pid, second.create_time, Signal.SIGHUP) is (
            SignalDelivery.SENT
        )
        assert open_pidfds() == before + 2  # one pinned handle per process
        assert signaller.wait_gone(first.pid, first.create_time, WAIT) is True
        assert open_pidfds() == before + 1  # the exited one's handle is closed
    finally:
        signaller.close()
    assert open_pidfds() == before
    assert first.popen.wait(timeout=WAIT) == -signal.SIGKILL
    assert second.received() == [NUMBER[Signal.SIGHUP]]


# -- through the terminator -----------------------------------------------------------------


def test_the_terminator_escalates_through_each_signaller(
    signaller: Signaller, spawn: Spawner
) -> None:
    """A child that catches SIGTERM: the wait runs out, SIGKILL follows, the outcome says so."""
    stubborn, bystander = spawn.pinger(), spawn.pinger()
    factory = LocalTransportFactory(sample_seconds=0, signaller=signaller)
    transport = factory.open(
        HostSpec(host_id="localhost", os=OS.LINUX, transport=TransportKind.LOCAL)
    )
    info = transport.get_process(stubborn.pid)
    assert info is not None
    # Root runs CI: root's processes are ours here, and only this child may be touched.
    settings = SafetySettings(
        protect_root=False, min_pid=2, scope="descendants", scope_root_pid=os.getpid()
    )
    listing = transport.list_processes().processes
    policy = policy_for(settings, transport.vantage(), listing)
    terminator = Terminator(transport, policy, clock=clock())
    action = RuleAction(signal=Signal.SIGTERM, timeout_seconds=0.3, fallback_signal=Signal.SIGKILL)

    record = terminator.terminate(finding_for(info), action, dry_run=False)

    assert record.outcome is KillOutcome.KILLED, record.detail
    assert record.signals == ("SIGTERM", "SIGKILL")
    assert record.elapsed_seconds >= 0.3  # it waited the rule's timeout before escalating
    assert stubborn.popen.wait(timeout=WAIT) == -signal.SIGKILL
    assert bystander.received() == []
