"""Linux signal delivery through pidfds: immune to PID reuse.

A pidfd pins one process. We open it, *then* confirm the start time of the process it names;
if it matches, every later signal through that fd reaches that process or nobody (ESRCH once
it has exited), never a newcomer that inherited the PID. Exit is awaited by polling the fd,
which becomes readable when the process terminates (zombies included).
"""

from __future__ import annotations

import os
import select
import signal as _signal
import threading
from collections.abc import Callable

from agents.transports.base import SignalDelivery
from reaper_engine.models.process import START_TIME_TOLERANCE
from reaper_engine.signals import Signal

_MAX_OPEN = 256

StartTimeOf = Callable[[int], float | None]
"""pid -> start time of the process that has it now, or None if there is none."""


def pidfd_supported() -> bool:
    if not hasattr(os, "pidfd_open") or not hasattr(_signal, "pidfd_send_signal"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:  # ENOSYS on kernels older than 5.3, EPERM under some seccomp profiles
        return False
    os.close(fd)
    return True


class PidfdSignaller:
    def __init__(self, start_time_of: StartTimeOf) -> None:
        self._start_time_of = start_time_of
        self._fds: dict[tuple[int, float], int] = {}
        self._lock = threading.Lock()

    def send(self, pid: int, create_time: float, sig: Signal) -> SignalDelivery:
        fd = self._open(pid, create_time)
        if fd is None:
            return SignalDelivery.GONE
        try:
            _signal.pidfd_send_signal(fd, int(getattr(_signal, sig.value)))
        except ProcessLookupError:
            return SignalDelivery.GONE
        except PermissionError:
            return SignalDelivery.DENIED
        return SignalDelivery.SENT

    def wait_gone(self, pid: int, create_time: float, timeout: float) -> bool:
        fd = self._open(pid, create_time)
        if fd is None:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if poller.poll(max(0, int(timeout * 1000))):
            self._forget((pid, create_time))
            return True
        return False

    def close(self) -> None:
        with self._lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)

    def _open(self, pid: int, create_time: float) -> int | None:
        """The pidfd of exactly this process, or None if it is gone or the PID was reused."""
        key = (pid, create_time)
        with self._lock:  # held throughout, so two threads never open (and leak) one key twice
            fd = self._fds.get(key)
            if fd is not None:
                return fd
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return None
            started = self._start_time_of(pid)
            if started is None or abs(started - create_time) > START_TIME_TOLERANCE:
                os.close(fd)
                return None
            self._fds[key] = fd
            # Survivors of every signal keep their fd; bound the cache, oldest closed first.
            while len(self._fds) > _MAX_OPEN:
                os.close(self._fds.pop(next(iter(self._fds))))
            return fd

    def _forget(self, key: tuple[int, float]) -> None:
        with self._lock:
            fd = self._fds.pop(key, None)
        if fd is not None:
            os.close(fd)
