"""A fast process reader for Linux that reads /proc directly.

psutil builds a `Process` object and reads several files per attribute group; a scan only needs
one ``stat`` record, the command line, the owner and the executable, so reading those by hand
is three to four times cheaper (bench/bench_readers.py). The module imports on any OS and
does no I/O until a reader is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from agents.platform.snapshot import (
    ACCESS_DENIED,
    MALFORMED_STAT,
    MALFORMED_STATUS,
    READ_ERROR,
    VANISHED,
    ProcessSnapshot,
)
from reaper_engine.log import get_logger
from reaper_engine.models import ProcessInfo, ProcessState

log = get_logger(__name__)

PF_KTHREAD: Final = 0x00200000
"""``task_struct.flags`` bit set on kernel threads (include/linux/sched.h)."""

# Fields after the ``)`` that closes comm: 3 (state) .. 44 (cguest_time). Every kernel since
# 2.6.24 writes at least these, so a shorter record was cut off, and a number in it may have
# been cut too: refusing it is safer than reading a truncated rss or start time as valid.
_MIN_FIELDS_AFTER_COMM: Final = 42

_STATES: Final[dict[str, ProcessState]] = {
    "R": ProcessState.RUNNING,
    "S": ProcessState.SLEEPING,
    "D": ProcessState.DISK_SLEEP,
    "T": ProcessState.STOPPED,
    "t": ProcessState.STOPPED,  # tracing stop
    "Z": ProcessState.ZOMBIE,
    "I": ProcessState.IDLE,
    "X": ProcessState.DEAD,
    "x": ProcessState.DEAD,
}

_READ_CHUNK: Final = 4096

EUID_SETTLED_SECONDS: Final = 2.0
"""A process this old has finished changing its uid, as far as `ProcfsReader.read` assumes."""

EUID_MEMORY_SECONDS: Final = 300.0
"""How long `ProcfsReader.read` trusts a remembered euid before reading ``status`` again."""

_EuidKey = tuple[int, int]  # (pid, start time in clock ticks since boot)
_Euid = tuple[int, float]  # (euid, when read from status: time.monotonic())
_DELETED: Final = " (deleted)"


class ProcParseError(ValueError):
    """A /proc record that is malformed or truncated."""


class _StatusParseError(ValueError):
    """/proc/PID/status has no readable ``Uid:`` line."""


@dataclass(frozen=True, slots=True)
class StatFields:
    """The fields of /proc/PID/stat that a scan uses, in kernel units (clock ticks, pages)."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    flags: int
    utime: int
    stime: int
    starttime: int
    rss_pages: int

    @property
    def is_kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


# (pid, comm, state, ppid, pgrp, session, flags, utime, stime, starttime, rss_pages)
_StatTuple = tuple[int, str, str, int, int, int, int, int, int, int, int]


def _parse_stat_tuple(text: str) -> _StatTuple:
    # The reader's hot path: a plain tuple, because building a frozen dataclass costs more
    # than parsing the record.
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ProcParseError("no '(comm)' in stat record")
    pid_text = text[:open_paren].strip()
    # int() would accept "+1", "1_0" and non-ASCII digits; the kernel writes none of them.
    if not (pid_text.isascii() and pid_text.isdigit()):
        raise ProcParseError(f"pid is not a number: {pid_text!r}")
    parts = text[close_paren + 1 :].split()
    if len(parts) < _MIN_FIELDS_AFTER_COMM:
        raise ProcParseError(f"stat record truncated: {len(parts)} fields after comm")
    state = parts[0]
    if len(state) != 1:
        raise ProcParseError(f"state is not one character: {state!r}")
    # Indexes are the man-page field numbers (proc_pid_stat(5)) minus 3.
    try:
        numbers = (
            int(parts[1]),  # ppid
            int(parts[2]),  # pgrp
            int(parts[3]),  # session
            int(parts[6]),  # flags
            int(parts[11]),  # utime
            int(parts[12]),  # stime
            int(parts[19]),  # starttime
            int(parts[21]),  # rss
        )
    except ValueError as exc:
        raise ProcParseError(f"non-numeric field in stat record: {exc}") from None
    if min(numbers) < 0:
        raise ProcParseError(f"negative field in stat record: {numbers}")
    return (int(pid_text), text[open_paren + 1 : close_paren], state, *numbers)


def parse_stat(text: str) -> StatFields:
    """Parse one /proc/PID/stat record.

    comm is whatever the process named itself (up to 15 bytes, or 63 for kernel threads): it may
    contain spaces, ``(`` and ``)``, so it runs from the first ``(`` to the LAST ``)``. Raises
    `ProcParseError` for anything that is not a complete record, and nothing else, whatever the
    input.
    """
    return StatFields(*_parse_stat_tuple(text))


def parse_status_euid(data: bytes) -> int:
    """The effective uid from /proc/PID/status (``Uid:`` real, effective, saved, filesystem)."""
    start = data.find(b"\nUid:")
    if start < 0:
        raise _StatusParseError("no Uid line")
    end = data.find(b"\n", start + 1)
    fields = data[start + 5 : end if end >= 0 else len(data)].split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise _StatusParseError(f"bad Uid line: {fields!r}")
    return int(fields[1])


class UserNames:
    """uid → user name, cached: a scan sees a handful of uids across thousands of processes.

    An entry is trusted for ``ttl`` seconds only: a daemon scans for weeks, and a user
    deleted meanwhile may see its uid given to someone else (the name protections and
    rules match on would then be the old owner's)."""

    def __init__(self, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._names: dict[int, tuple[str, float]] = {}

    def __call__(self, uid: int) -> str:
        cached = self._names.get(uid)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        import pwd  # noqa: PLC0415 - POSIX only; this module must import on Windows

        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:  # a uid without a passwd entry (containers, deleted users)
            name = str(uid)
        self._names[uid] = (name, now + self._ttl)
        return name


def _read_all(name: str, dir_fd: int | None = None) -> bytes:
    # os.open/os.read rather than open(): no buffered file object per read, and procfs
    # returns a whole record per read(), so a short read means the end.
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        data = os.read(fd, _READ_CHUNK)
        if len(data) < _READ_CHUNK:
            return data
        chunks = [data]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class ProcfsReader:
    """Lists processes from /proc (Linux only).

    Each process is read through a descriptor of its /proc/PID directory. That descriptor
    stays bound to the process it was opened for: if the process exits and its PID is reused
    halfway through, the next read fails (counted as vanished) instead of mixing one
    process's start time with another's command line.

    ``uid`` is the owner of /proc/PID, which the kernel sets to the process's *effective* uid
    (one ``fstat``, no file to parse). Except that a non-dumpable process (setuid programs,
    sshd, anything that called ``prctl(PR_SET_DUMPABLE, 0)``) has its /proc directory owned
    by root whatever its uid. So when the owner is root and the process is not a kernel thread
    or a zombie (which are reported truthfully), the effective uid is read from ``status``,
    unless ``exact_uid=False``: that read is a third of the cost of a scan when most processes
    run as root, and the error it avoids is reporting a user's process as root's.

    ``rss`` is the ``stat`` record's, which since Linux 6.2 may lag the exact figure (``statm``,
    what psutil reads) by what each CPU has not yet folded into the process's counter: at
    most 3 * CPUs * max(32, 2 * CPUs) pages, 768 KiB on 2 CPUs, ~96 MiB on 64. Against
    memory rules measured in GiB that is noise, and one more file per process is not
    (~19% of a read): tests/integration/test_readers_live.py holds the two to that bound.

    What ``status`` said is remembered for the next `read` by (pid, start time), for
    processes at least `EUID_SETTLED_SECONDS` old when read: programs change their uid while
    starting (sshd, su, login drop privileges right after the fork), not hours later, so a
    daemon's steady-state scans read ``status`` only for new processes, and for the others
    once every `EUID_MEMORY_SECONDS`, which bounds how stale a reported uid can be. `get`,
    which the terminator uses to re-check a process just before each signal, never uses the
    memory.
    """

    def __init__(self, root: Path = Path("/proc"), *, exact_uid: bool = True) -> None:
        self._root = str(root)
        self._exact_uid = exact_uid
        self._boot_time: float | None = None
        self._hz = 100
        self._page_size = 4096
        self._user_name = UserNames()
        # Replaced whole by each read (never mutated), so concurrent reads need no lock.
        self._euids: dict[_EuidKey, _Euid] = {}

    # -- public ------------------------------------------------------------------------------

    def read(self) -> ProcessSnapshot:
        taken_at = time.time()
        read_at = time.monotonic()  # the memory's clock: wall time may step back
        self._ensure_boot_info()
        processes: list[ProcessInfo] = []
        skipped: dict[str, int] = {}
        known = self._euids
        learned: dict[_EuidKey, _Euid] = {}
        for entry in os.listdir(self._root):
            if not (entry.isascii() and entry.isdigit()):
                continue
            reason: str
            try:
                processes.append(self._read_pid(entry, known, learned, taken_at, read_at))
                continue
            except (FileNotFoundError, ProcessLookupError):
                reason = VANISHED
            except PermissionError:
                reason = ACCESS_DENIED
            except ProcParseError:
                reason = MALFORMED_STAT
            except _StatusParseError:
                reason = MALFORMED_STATUS
            except (OSError, ValueError) as exc:  # EIO, a ValidationError: skip, don't die
                reason = READ_ERROR
                log.debug("proc_entry_error", pid=entry, error=repr(exc))
            skipped[reason] = skipped.get(reason, 0) + 1
            log.debug("proc_entry_skipped", pid=entry, reason=reason)
        self._euids = learned  # only the living: the memory never outgrows the table
        return ProcessSnapshot(tuple(processes), skipped, taken_at)

    def get(self, pid: int) -> ProcessInfo | None:
        if pid < 0:
            return None
        self._ensure_boot_info()
        try:
            return self._read_pid(str(pid))
        except (OSError, ValueError) as exc:
            log.debug("proc_get_failed", pid=pid, error=repr(exc))
            return None

    # -- internals ---------------------------------------------------------------------------

    def _ensure_boot_info(self) -> None:
        if self._boot_time is not None:
            return
        self._hz = os.sysconf("SC_CLK_TCK")
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._boot_time = _read_btime(self._root)

    def _read_pid(
        self,
        entry: str,
        known: Mapping[_EuidKey, _Euid] = MappingProxyType({}),
        learned: dict[_EuidKey, _Euid] | None = None,
        taken_at: float = 0.0,
        read_at: float = 0.0,
    ) -> ProcessInfo:
        """One process. ``known`` is the euid memory to use, ``learned`` (if given) collects
        it for the next read, made at ``taken_at`` (wall clock) and ``read_at`` (monotonic;
        see the class docstring)."""
        dir_fd = os.open(f"{self._root}/{entry}", os.O_RDONLY | os.O_DIRECTORY)
        try:
            owner = os.fstat(dir_fd).st_uid
            (pid, comm, state, ppid, pgrp, session, flags, utime, stime, starttime, rss) = (
                _parse_stat_tuple(_read_all("stat", dir_fd).decode("utf-8", "replace"))
            )
            kernel_thread = bool(flags & PF_KTHREAD)
            # Kernel threads and zombies have no memory map: no command line, no executable,
            # and an owner that is not hidden by the dumpable flag. Skip those reads.
            no_mm = kernel_thread or state == "Z"
            # psutil's formula, operand for operand, so both readers give identical floats.
            create_time = float(starttime) / self._hz + (self._boot_time or 0.0)
            uid = owner
            if owner == 0 and self._exact_uid and not no_mm:
                key = (pid, starttime)
                remembered = known.get(key)
                if remembered is not None and remembered[1] > read_at - EUID_MEMORY_SECONDS:
                    uid = remembered[0]
                    if learned is not None:
                        learned[key] = remembered
                else:
                    uid = parse_status_euid(_read_all("status", dir_fd))
                    if learned is not None and create_time <= taken_at - EUID_SETTLED_SECONDS:
                        learned[key] = (uid, read_at)
            cmdline: tuple[str, ...] = ()
            exe: str | None = None
            if not no_mm:
                raw = _read_all("cmdline", dir_fd)
                if raw:
                    cmdline = tuple(raw.decode("utf-8", "replace").split("\0"))
                    if cmdline[-1] == "":
                        cmdline = cmdline[:-1]
                try:
                    exe = _undeleted(os.readlink("exe", dir_fd=dir_fd))
                except OSError:  # not ours to see (ptrace check) or gone: a scan can do without
                    exe = None
        finally:
            os.close(dir_fd)
        return ProcessInfo(
            pid=pid,
            ppid=ppid,
            pgid=pgrp,
            sid=session,
            uid=uid,
            user=self._user_name(uid),
            name=comm,
            exe=exe,
            cmdline=cmdline,
            create_time=create_time,
            status=_STATES.get(state, ProcessState.UNKNOWN),
            cpu_time=(utime + stime) / self._hz,
            rss=rss * self._page_size,
            is_kernel_thread=kernel_thread,
        )


def _undeleted(exe: str) -> str:
    # The kernel appends " (deleted)" to the path of a replaced or removed binary. psutil
    # strips it (unless a file with that literal name exists) and so do we, so that a rule
    # naming the executable still matches a process started before an upgrade.
    if exe.endswith(_DELETED) and not os.path.lexists(exe):
        return exe[: -len(_DELETED)]
    return exe


def _read_btime(root: str) -> float:
    for line in _read_all(f"{root}/stat").splitlines():
        if line.startswith(b"btime "):
            return float(line.split()[1])
    raise RuntimeError(f"no btime line in {root}/stat")
