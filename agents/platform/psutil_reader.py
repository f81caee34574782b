"""The portable process reader (Linux, macOS, Windows), built on psutil."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

from agents.platform.procfs import UserNames
from agents.platform.snapshot import ACCESS_DENIED, VANISHED, ProcessSnapshot
from reaper_engine.log import get_logger
from reaper_engine.models import ProcessInfo, ProcessState

log = get_logger(__name__)

ZOMBIE_UNREADABLE = "zombie_unreadable"

_T = TypeVar("_T")

_STATES: dict[str, ProcessState] = {
    psutil.STATUS_RUNNING: ProcessState.RUNNING,
    psutil.STATUS_SLEEPING: ProcessState.SLEEPING,
    psutil.STATUS_DISK_SLEEP: ProcessState.DISK_SLEEP,
    psutil.STATUS_STOPPED: ProcessState.STOPPED,
    psutil.STATUS_TRACING_STOP: ProcessState.STOPPED,
    psutil.STATUS_ZOMBIE: ProcessState.ZOMBIE,
    psutil.STATUS_DEAD: ProcessState.DEAD,
    psutil.STATUS_IDLE: ProcessState.IDLE,
}

_IS_LINUX = sys.platform.startswith("linux")
# Absent on Windows; looked up once so the per-process path is a None check.
_getpgid: Callable[[int], int] | None = getattr(os, "getpgid", None)
_getsid: Callable[[int], int] | None = getattr(os, "getsid", None)


def _optional(read: Callable[[], _T]) -> _T | None:
    """An attribute we can list a process without: None if the OS won't tell us.

    NoSuchProcess still propagates (the process is gone, so it is not listed), but its
    ZombieProcess subclass does not: a zombie is listed, with whatever it still has.
    """
    try:
        return read()
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _os_id(call: Callable[[int], int] | None, pid: int) -> int | None:
    if call is None:
        return None
    try:
        return call(pid)
    except OSError:  # gone, or (on some BSDs) another session's process
        return None


class PsutilReader:
    """Lists processes through psutil.

    The mapping matches `ProcfsReader` field for field so that the two agree on Linux:

    * ``uid`` is the *effective* uid (``uids().effective``): the owner of /proc/PID that the
      procfs reader uses is the effective uid too, and it is the one that decides whether we
      may signal the process. ``None`` on Windows.
    * ``user`` is the name of that same uid on POSIX. ``username()`` would name the *real*
      uid, so a setuid process would get a ``user`` that disagrees with its ``uid``. On
      Windows, where there is no uid, it is ``username()`` (``DOMAIN\\user``).
    * ``is_kernel_thread`` (Linux): kthreadd (pid 2) and its children.

    It iterates ``psutil.process_iter()`` and reads each process inside ``oneshot()`` rather
    than passing ``attrs=``: with ``attrs`` psutil drops vanished processes and replaces
    denied attributes silently, and a snapshot must count what it skipped and why.
    """

    def __init__(self) -> None:
        self._user_name: UserNames | None = UserNames() if os.name == "posix" else None

    def read(self) -> ProcessSnapshot:
        taken_at = time.time()
        processes: list[ProcessInfo] = []
        skipped: dict[str, int] = {}
        for proc in psutil.process_iter():
            reason: str
            try:
                processes.append(self._info(proc))
                continue
            except psutil.ZombieProcess:  # before NoSuchProcess: it is a subclass
                reason = ZOMBIE_UNREADABLE
            except psutil.NoSuchProcess:
                reason = VANISHED
            except psutil.AccessDenied:
                reason = ACCESS_DENIED
            skipped[reason] = skipped.get(reason, 0) + 1
            log.debug("process_skipped", pid=proc.pid, reason=reason)
        return ProcessSnapshot(tuple(processes), skipped, taken_at)

    def get(self, pid: int) -> ProcessInfo | None:
        if pid < 0:
            return None
        try:
            return self._info(psutil.Process(pid))
        except psutil.Error as exc:  # NoSuchProcess, ZombieProcess, AccessDenied
            log.debug("process_get_failed", pid=pid, error=repr(exc))
            return None

    def _info(self, proc: psutil.Process) -> ProcessInfo:
        pid = proc.pid
        with proc.oneshot():
            # Without these three there is no identity or tree position: the process is skipped.
            ppid = proc.ppid()
            create_time = proc.create_time()
            name = proc.name()
            status_text = _optional(proc.status)
            cmdline = _optional(proc.cmdline) or []
            exe = _optional(proc.exe) or None  # psutil gives "" when it can't tell
            cpu = _optional(proc.cpu_times)
            memory = _optional(proc.memory_info)
            uid: int | None = None
            user: str | None
            if self._user_name is not None:
                uids = _optional(proc.uids)
                if uids is not None:
                    uid = uids.effective
                user = self._user_name(uid) if uid is not None else None
            else:
                user = _optional(proc.username)
        return ProcessInfo(
            pid=pid,
            ppid=ppid,
            pgid=_os_id(_getpgid, pid),
            sid=_os_id(_getsid, pid),
            uid=uid,
            user=user,
            name=name,
            exe=exe,
            cmdline=tuple(cmdline),
            create_time=max(0.0, create_time),
            status=_STATES.get(status_text or "", ProcessState.UNKNOWN),
            cpu_time=(cpu.user + cpu.system) if cpu is not None else 0.0,
            rss=memory.rss if memory is not None else 0,
            is_kernel_thread=_IS_LINUX and (pid == 2 or ppid == 2),
        )
