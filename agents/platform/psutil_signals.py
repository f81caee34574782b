"""Portable signal delivery through psutil (macOS, Windows, and Linux without pidfds).

psutil re-checks that a Process object still names the process it was created for (by start
time) before signalling, which narrows the PID-reuse window to the kernel call itself.
Exit is awaited by polling with backoff: on these platforms there is no portable way to be
told that a process we did not spawn has exited. A zombie counts as exited.
On Windows, SIGTERM and SIGKILL both end the process (TerminateProcess); other signals are
not deliverable there and are reported as denied.
"""

from __future__ import annotations

import signal as _signal
import time

import psutil

from agents.transports.base import SignalDelivery
from reaper_engine.models.process import START_TIME_TOLERANCE
from reaper_engine.signals import Signal

_POLL_FIRST, _POLL_MAX = 0.01, 0.25


class PsutilSignaller:
    def send(self, pid: int, create_time: float, sig: Signal) -> SignalDelivery:
        proc = _same_process(pid, create_time)
        if proc is None:
            return SignalDelivery.GONE
        try:
            if sig is Signal.SIGKILL:
                proc.kill()
            elif sig is Signal.SIGTERM:
                proc.terminate()
            else:
                number = getattr(_signal, sig.value, None)
                if number is None:
                    return SignalDelivery.DENIED  # e.g. SIGHUP does not exist on Windows
                proc.send_signal(number)
        except psutil.NoSuchProcess:
            return SignalDelivery.GONE
        except psutil.AccessDenied:
            return SignalDelivery.DENIED
        return SignalDelivery.SENT

    def wait_gone(self, pid: int, create_time: float, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pause = _POLL_FIRST
        while True:
            proc = _same_process(pid, create_time)
            if proc is None:
                return True
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _POLL_MAX)

    def close(self) -> None:
        """Nothing to release."""


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    if abs(started - create_time) > START_TIME_TOLERANCE:
        return None
    return proc
