"""The audit log file: one JSON line per kill decision, with size-based rotation.

Location: ``$XDG_DATA_HOME/reaper/reaper.log``, or ``$HOME/.local/share/reaper/reaper.log``
when XDG_DATA_HOME is unset, empty or relative (seed 000's "Audit Trail"; see
``docs/audit-log.md``). Each line is ``AuditRecord.model_dump_json()``.

Writing an audit line must never break a kill: the sink is called after the signal was
sent, so an exception here would turn a kill that happened into an error report. Failures
are logged (``audit_write_failed``) and counted (``failures``) instead of raised.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from reaper_engine.audit import AuditRecord
from reaper_engine.log import get_logger

if sys.platform != "win32":
    import fcntl

log = get_logger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_BYTES = 100 * MIB  # seed 000: logging.max_size_mb = 100
DEFAULT_BACKUPS = 5  # seed 000: logging.rotate_count = 5
DEFAULT_LOG_SETTING = "~/.local/share/reaper/reaper.log"  # seed 000: logging.file

_DIR_MODE = 0o700  # audit lines name processes, commands and users: owner only
_FILE_MODE = 0o600
_XDG_DEFAULT_PREFIX = "~/.local/share/"


def _xdg_data_home(env: Mapping[str, str]) -> Path | None:
    # The XDG spec says a relative value is invalid and must be ignored, like an empty one.
    value = env.get("XDG_DATA_HOME", "")
    return Path(value) if value and os.path.isabs(value) else None


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME", "")
    # Without HOME in the given environment, fall back to the account's home directory.
    return Path(home) if home else Path.home()


def default_audit_path(env: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/reaper/reaper.log``, else ``$HOME/.local/share/reaper/reaper.log``."""
    base = _xdg_data_home(env) or _home(env) / ".local" / "share"
    return base / "reaper" / "reaper.log"


def expand_log_path(value: str, env: Mapping[str, str]) -> Path:
    """Turn a ``logging.file`` setting into a path.

    The rule:

    * ``~/.local/share/<rest>`` — the seed's default spelling — means "the user's data
      directory", so it becomes ``$XDG_DATA_HOME/<rest>`` when XDG_DATA_HOME is set (and
      absolute), else ``$HOME/.local/share/<rest>``;
    * any other leading ``~`` or ``~/`` is expanded with ``env["HOME"]``; ``~user/...`` with
      that account's home directory;
    * everything else, absolute paths included, is taken literally: a path the user spelled
      out is never redirected.
    """
    if value.startswith(_XDG_DEFAULT_PREFIX):
        xdg = _xdg_data_home(env)
        if xdg is not None:
            return xdg / value.removeprefix(_XDG_DEFAULT_PREFIX)
    if value == "~" or value.startswith("~/"):
        return _home(env) / value[2:]
    if value.startswith("~"):
        return Path(os.path.expanduser(value))
    return Path(value)


class JsonLinesAuditSink:
    """An ``AuditSink`` appending one JSON line per record to ``path``, rotating by size.

    Concurrency: a thread lock orders the writers of this process, and an advisory
    ``flock`` on ``<path>.lock`` orders the processes that share the file (POSIX only), so
    the size check, the rotation and the write happen as one step. Independently of the
    lock, each line goes out in a single ``os.write`` on an ``O_APPEND`` descriptor, so a
    writer that does not take the lock still cannot split or overwrite a line.

    Rotation happens *before* a write that would take the file past ``max_bytes``:
    ``reaper.log`` → ``reaper.log.1`` → … → ``reaper.log.<backups>``, the oldest dropped.
    With ``backups=0`` the file is truncated in place instead (the old lines are lost). A
    line longer than ``max_bytes`` is still written whole, into an empty file: lines are
    never split across files.
    """

    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be >= 0, got {backups}")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.written = 0
        self.failures = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        env: Mapping[str, str],
        *,
        file: str | None = None,
        max_size_mb: float = DEFAULT_MAX_BYTES / MIB,
        rotate_count: int = DEFAULT_BACKUPS,
    ) -> JsonLinesAuditSink:
        """Build the sink from the ``[logging]`` table (file, max_size_mb, rotate_count)."""
        path = expand_log_path(file, env) if file else default_audit_path(env)
        return cls(path, max_bytes=max(1, int(max_size_mb * MIB)), backups=rotate_count)

    def record(self, entry: AuditRecord) -> None:
        with self._lock:
            try:
                line = (entry.model_dump_json() + "\n").encode("utf-8")
                with self._interprocess_lock():
                    self._append(line)
            # Deliberately broad: see the module docstring; a kill path must not fail here.
            except Exception as exc:  # noqa: BLE001
                self.failures += 1
                log.error("audit_write_failed", error=repr(exc), path=str(self.path), pid=entry.pid)
            else:
                self.written += 1

    def _interprocess_lock(self) -> _FileLock:
        self.path.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        return _FileLock(self.path.with_name(self.path.name + ".lock"))

    def _append(self, line: bytes) -> None:
        fd = _open_append(self.path)
        try:
            size = os.fstat(fd).st_size
            if size > 0 and size + len(line) > self.max_bytes:
                if self.backups == 0:
                    os.ftruncate(fd, 0)  # O_APPEND writes then land at the new end, 0
                else:
                    os.close(fd)
                    fd = -1
                    self._rotate()
                    fd = _open_append(self.path)
            _write_all(fd, line)
        finally:
            if fd >= 0:
                os.close(fd)

    def _rotate(self) -> None:
        # os.replace overwrites the target, so shifting .N-1 onto .N drops the oldest.
        for index in range(self.backups - 1, 0, -1):
            older = self.backup_path(index)
            if older.exists():
                os.replace(older, self.backup_path(index + 1))
        os.replace(self.path, self.backup_path(1))

    def backup_path(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{index}")

    def files(self) -> list[Path]:
        """The log and its existing backups, oldest first (the order lines were written)."""
        backups = [self.backup_path(i) for i in range(self.backups, 0, -1)]
        return [p for p in [*backups, self.path] if p.exists()]


def _open_append(path: Path) -> int:
    # O_APPEND: every write goes to the current end, even with other writers on the file.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, _FILE_MODE)


def _write_all(fd: int, data: bytes) -> None:
    # A regular-file write of one line is complete in practice; should the OS accept only
    # part (disk nearly full), finish the line so the next record starts on a line of its own.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _FileLock:
    """An exclusive ``flock`` on a side file, held for one check-rotate-write step.

    A side file rather than the log itself, because rotation renames the log: a process
    that locked the old inode would not exclude one that opened the new file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> None:
        if sys.platform == "win32":  # no flock: the thread lock and O_APPEND remain
            return
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise

    def __exit__(self, *exc_info: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = -1


class MemoryAuditSink:
    """Keeps records in a list (thread-safe): for tests, the demo and status views."""

    def __init__(self) -> None:
        self._records: list[AuditRecord] = []
        self._lock = threading.Lock()

    def record(self, entry: AuditRecord) -> None:
        with self._lock:
            self._records.append(entry)

    @property
    def records(self) -> list[AuditRecord]:
        with self._lock:
            return list(self._records)


@dataclass(frozen=True, slots=True)
class AuditReadResult:
    records: list[AuditRecord]
    skipped: int  # lines that were not a valid AuditRecord


def read_audit_file(path: Path) -> AuditReadResult:
    """Parse one audit file; a missing file has no records. Malformed lines are counted."""
    records: list[AuditRecord] = []
    skipped = 0
    for line in _lines(path):
        if not line.strip():
            continue
        try:
            records.append(AuditRecord.model_validate_json(line))
        except ValidationError:
            skipped += 1
    return AuditReadResult(records, skipped)


def read_audit(path: Path, *, backups: int = 0) -> list[AuditRecord]:
    """The records of ``path`` and, with ``backups=N``, of its N backups, oldest first.

    Malformed lines (a torn write by a crashed foreign writer, hand edits) are skipped;
    how many is logged as ``audit_lines_skipped``.
    """
    files = [path.with_name(f"{path.name}.{i}") for i in range(backups, 0, -1)] + [path]
    records: list[AuditRecord] = []
    skipped = 0
    for file in files:
        result = read_audit_file(file)
        records.extend(result.records)
        skipped += result.skipped
    if skipped:
        log.warning("audit_lines_skipped", path=str(path), skipped=skipped)
    return records


def _lines(path: Path) -> Iterator[str]:
    try:
        # errors="replace": a line with bad bytes becomes a malformed line, not an exception.
        with path.open(encoding="utf-8", errors="replace") as handle:
            yield from handle
    except FileNotFoundError:
        return
