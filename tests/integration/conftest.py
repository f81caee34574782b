"""Real child processes for integration tests, always reaped, pass or fail.

Every process is started in a new session, so it is never in pytest's own process group or
session, and teardown kills the whole group it leads -- unless the test already reaped it (see
``Children.reap_all``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import psutil
import pytest


class Children:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, script: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def reap_all(self) -> None:
        """Kill the process group each child leads, then wait for the child.

        A leader's pid names its group only while the leader is not yet reaped: until then
        the pid cannot be reused. Once the test itself has waited for it (``returncode`` is
        set), the pid -- and so the group id -- may already belong to someone else's new
        process group, so no signal is sent to it. A test that reaps a leader itself must
        first have killed the group that leader leads (or know it has no other members).
        """
        for proc in self.procs:
            if proc.returncode is None:  # not reaped by the test: the pid is still ours
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group it leads: only our children
            proc.wait(timeout=10)


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.reap_all()


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "") -> object:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = 0.02
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def descendants_by_cmdline(root: int) -> dict[str, int]:
    """Command line -> pid of every live, non-zombie descendant of ``root``."""
    out: dict[str, int] = {}
    try:
        kids = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return out
    for kid in kids:
        try:
            if kid.status() != psutil.STATUS_ZOMBIE:
                out[" ".join(kid.cmdline())] = kid.pid
        except psutil.NoSuchProcess:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
