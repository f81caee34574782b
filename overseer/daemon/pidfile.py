"""The daemon's PID file (seed 001): one daemon per PID file, stale files replaced safely.

Format: line 1 the PID (what tools such as systemd's ``PIDFile=`` read), line 2 the
process's start time (epoch seconds, psutil's clock). A PID alone does not name a process —
the OS reuses it — so every decision ("is the daemon running?", "may `reaper stop` signal
it?") compares the start time too.

Creation is ``O_CREAT | O_EXCL``: of two daemons starting together only one creates the file.
A file that already exists is *stale* when its PID is gone, or now belongs to a process that
started at another time, or the file is unreadable garbage; it is then replaced. The check and
the replacement happen under an ``flock`` on ``<pid file>.lock``, otherwise two starters could
both judge the same stale file, and the second would delete the file the first just wrote.

The daemon also holds an ``flock`` on the PID file itself for its whole life (released by the
kernel when it exits, however it exits). ``reaper stop`` and ``reaper status`` only believe a
PID file whose lock is held (:func:`lock_is_held`): a file a crash left behind, or one someone
wrote by hand, names no daemon whatever PID it holds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import structlog

from reaper_engine.models.process import START_TIME_TOLERANCE

if sys.platform != "win32":
    import fcntl

log = structlog.get_logger(__name__)

_DIR_MODE = 0o700
_FILE_MODE = 0o644


class PidFileError(Exception):
    """The PID file's path cannot be used (a directory, or under a file)."""


def check_pid_path(path: Path) -> None:
    """Raise PidFileError if ``path`` cannot be a PID file: it is not a regular file, or one
    of its parents exists and is not a directory."""
    if path.exists() and not path.is_file():
        raise PidFileError(f"PID file {path} is not a regular file")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PidFileError(f"PID file {path}: {parent} is not a directory")
            break


def pid_file_owner_problem(path: Path) -> str | None:
    """None if ``path`` is owned by this user and not writable by group or others, else why.

    Anyone who can write the PID file can make ``reaper stop`` aim at a process of their
    choosing, so such a file is never trusted.
    """
    if not hasattr(os, "getuid"):
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if st.st_uid != os.getuid():
        return f"PID file {path} is owned by another user (uid {st.st_uid}); not trusted"
    if st.st_mode & 0o022:
        return (
            f"PID file {path} is writable by group or others (mode {st.st_mode & 0o777:o}); "
            "not trusted"
        )
    return None


def lock_is_held(path: Path) -> bool:
    """True if some process holds the daemon's lock on the PID file ``path`` (a live daemon).

    False when the file is missing, or nobody holds its lock (a stale or forged file).
    Without flock (Windows), True: the other checks stand alone there.
    """
    if sys.platform == "win32":
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def guarded(path: Path) -> contextlib.AbstractContextManager[None]:
    """The lock under which the PID file is created and removed (to read it consistently)."""
    return _locked(path)


class DaemonAlreadyRunningError(Exception):
    """Another live daemon holds the PID file."""

    def __init__(self, record: PidRecord, path: Path) -> None:
        super().__init__(
            f"another reaper daemon is already running (PID {record.pid}, PID file {path})"
        )
        self.record = record
        self.path = path


@dataclass(frozen=True, slots=True)
class PidRecord:
    pid: int
    start_time: float

    def render(self) -> str:
        return f"{self.pid}\n{self.start_time!r}\n"

    @classmethod
    def parse(cls, text: str) -> PidRecord | None:
        """The record in ``text``, or None if it is not one (a stale or foreign file)."""
        lines = text.split()
        try:
            pid = int(lines[0])
            start = float(lines[1])
        except (IndexError, ValueError):
            return None
        return cls(pid, start) if pid > 0 else None

    @classmethod
    def of_process(cls, pid: int) -> PidRecord:
        return cls(pid, psutil.Process(pid).create_time())


def process_start_time(pid: int) -> float | None:
    """The start time of live process ``pid``, or None if there is none (zombies count as gone)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        # Someone else's process holds the PID now: certainly not the daemon we recorded,
        # but return a start time that cannot match rather than guessing.
        return -1.0


def is_alive(record: PidRecord) -> bool:
    """True if the process the record names is still running (same PID *and* start time)."""
    start = process_start_time(record.pid)
    return start is not None and abs(start - record.start_time) <= START_TIME_TOLERANCE


def read_record(path: Path) -> PidRecord | None:
    try:
        return PidRecord.parse(path.read_text(encoding="ascii", errors="replace"))
    except FileNotFoundError:
        return None


def live_record(path: Path) -> PidRecord | None:
    """The record of the daemon running under ``path``, or None if none is (stale or absent)."""
    record = read_record(path)
    return record if record is not None and is_alive(record) else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    if sys.platform == "win32":  # no flock: O_EXCL alone still prevents two live daemons
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


class PidFile:
    """Acquire on start, release on stop; a context manager."""

    def __init__(self, path: Path, *, pid: int | None = None) -> None:
        self.path = path
        self.pid = pid if pid is not None else os.getpid()
        self.record: PidRecord | None = None
        self._fd: int | None = None  # the open PID file, flock-ed while we run

    def acquire(self) -> PidRecord:
        """Create the file for this process; DaemonAlreadyRunningError if a live daemon has it."""
        self.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        mine = PidRecord.of_process(self.pid)
        with _locked(self.path):
            for _ in range(2):  # at most: find a stale file, remove it, create ours
                try:
                    fd = os.open(
                        self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE
                    )
                except FileExistsError:
                    existing = read_record(self.path)
                    if existing is not None and is_alive(existing):
                        raise DaemonAlreadyRunningError(existing, self.path) from None
                    log.warning(
                        "pid_file_stale",
                        path=str(self.path),
                        pid=existing.pid if existing else None,
                    )
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                try:
                    if sys.platform != "win32":
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.write(fd, mine.render().encode("ascii"))
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd  # kept open: the lock lives as long as this daemon
                self.record = mine
                return mine
        raise OSError(errno.EEXIST, "could not replace the stale PID file", str(self.path))

    def release(self) -> None:
        """Remove the file, but only if it is still ours (never another daemon's)."""
        if self.record is None:
            return
        with _locked(self.path):
            if read_record(self.path) == self.record:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            if self._fd is not None:
                os.close(self._fd)  # releases the PID file's lock
                self._fd = None
        self.record = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
