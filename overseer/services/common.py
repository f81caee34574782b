"""What the per-platform service installers share: the runner, the daemon's command line, reports.

Every external command (systemctl, launchctl, schtasks) goes through one :class:`Runner`, so tests
record the command lines instead of touching the real service manager, and so no call can
forget the timeout or slip into a shell.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Literal, Protocol

import structlog

log = structlog.get_logger(__name__)

Platform = Literal["linux", "macos", "windows"]
PLATFORMS: tuple[Platform, ...] = ("linux", "macos", "windows")

# Exit codes of `reaper service …` (docs/service.md).
EXIT_OK = 0
EXIT_FAILED = 1  # the service manager is missing, unreachable, or refused a command
EXIT_NOT_RUNNING = 3  # `status`: not installed or not running (LSB's "program is not running")

# Shell conventions for "could not run it at all", so a report can say why without a traceback.
RC_NOT_FOUND = 127
RC_TIMED_OUT = 124
DEFAULT_TIMEOUT = 30.0

# What the service manager runs after the program: the daemon in the foreground, because the
# manager supervises the process itself (restart on failure, stop with SIGTERM, logs).
DAEMON_ARGS = ("start", "--foreground")
# What follows a Python interpreter so that it runs the reaper rather than a script.
MODULE_ARGS = ("-m", "overseer.cli")

# python, python3, python3.11, python3.13t, pythonw, python.exe, pythonw.exe, pypy3, macOS's
# framework "Python" …: an interpreter needs MODULE_ARGS, the `reaper` script does not.
_INTERPRETER = re.compile(r"(?:python|pypy)w?(?:\d+(?:\.\d+)*t?)?(?:\.exe)?", re.IGNORECASE)


def current_platform() -> Platform:
    if sys.platform == "darwin":
        return "macos"
    if sys.platform == "win32":
        return "windows"
    return "linux"


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """One line saying why it failed, for a person."""
        if self.returncode == RC_NOT_FOUND:
            return f"{self.argv[0]} not found"
        if self.returncode == RC_TIMED_OUT:
            return f"{self.argv[0]} timed out"
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return text[0] if text else f"exit status {self.returncode}"


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        """Run ``argv`` (no shell) and report; never raise."""
        ...


def run_command(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
    """The real runner: ``subprocess.run`` with a list argv, no shell, captured text, a timeout."""
    args = tuple(argv)
    log.debug("service.run", argv=args)
    try:
        done = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        return CommandResult(args, RC_NOT_FOUND, stderr=f"{args[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(args, RC_TIMED_OUT, stderr=f"{args[0]}: timed out after {timeout}s")
    except OSError as exc:  # not executable, too many open files …: report, don't crash the CLI
        return CommandResult(args, RC_NOT_FOUND, stderr=f"{args[0]}: {exc}")
    return CommandResult(args, done.returncode, done.stdout, done.stderr)


@dataclass(frozen=True)
class ServiceContext:
    """Everything a service file depends on, gathered once so generation is a pure function.

    Paths are pure paths of the *target* platform's flavour: a file printed for Windows on Linux
    keeps ``C:\\…`` paths (and one for macOS printed on Windows keeps ``/Users/…``). Only a
    ``local`` context's paths are read or written, and those are concrete :class:`Path`.
    """

    platform: Platform
    home: PurePath
    program: tuple[str, ...]  # argv that runs `reaper`; DAEMON_ARGS follow it
    config: PurePath | None = None
    uid: int = 0
    user: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    placeholder: bool = False  # program is a stand-in (another platform's file was asked for)
    local: bool = True  # False: a template for another platform, to print, never to install

    @property
    def daemon_argv(self) -> tuple[str, ...]:
        extra = ("--config", str(self.config)) if self.config is not None else ()
        return (*self.program, *DAEMON_ARGS, *extra)


@dataclass(frozen=True)
class ReportLine:
    text: str
    error: bool = False


@dataclass
class ServiceReport:
    """What a command did, line by line, and the exit code it earns."""

    exit_code: int = EXIT_OK
    lines: list[ReportLine] = field(default_factory=list)

    def say(self, text: str, code: int = EXIT_OK) -> None:
        """A plain line; ``code`` is the exit code of a state that is not an error ("not
        installed" earns 3 without being a failure)."""
        self.lines.append(ReportLine(text))
        self._earn(code)

    def fail(self, text: str, code: int = EXIT_FAILED) -> None:
        self.lines.append(ReportLine(text, error=True))
        self._earn(code)

    def _earn(self, code: int) -> None:
        # The first non-zero code decides: a later "not running" must not hide "could not ask".
        if self.exit_code == EXIT_OK:
            self.exit_code = code

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


# Programs shown when printing another platform's file: there is no interpreter of that
# platform to point at, and an obviously fake path is better than a plausible wrong one.
PLACEHOLDER_PROGRAM: dict[Platform, tuple[str, ...]] = {
    "linux": ("/path/to/reaper",),
    "macos": ("/path/to/reaper",),
    "windows": ("C:\\path\\to\\pythonw.exe", *MODULE_ARGS),
}


# Home directories for those files, for the same reason.
PLACEHOLDER_HOME: dict[Platform, PurePath] = {
    "linux": PurePosixPath("/home/you"),
    "macos": PurePosixPath("/Users/you"),
    "windows": PureWindowsPath("C:/Users/you"),
}
PLACEHOLDER_USER = "you"


def path_flavour(platform: Platform) -> type[PurePath]:
    return PureWindowsPath if platform == "windows" else PurePosixPath


def target_path(platform: Platform, raw: str | os.PathLike[str], what: str) -> PurePath:
    """``raw`` as an absolute path on ``platform`` (``what`` names it in the error).

    On this machine's own platform a relative path is taken from the working directory, as
    any command-line path is. For another platform's file there is no working directory to
    take it from, and this machine's rules must not apply: ``C:\\Tools\\x.exe`` is absolute
    on Windows however Linux sees it, and ``/opt/x`` is not absolute on Windows.
    """
    if platform == current_platform():
        # abspath, not resolve(): resolving a venv's bin/python symlink escapes the venv.
        return Path(os.path.abspath(raw))
    path = path_flavour(platform)(raw)
    if not path.is_absolute():
        example = "C:\\..." if platform == "windows" else "/..."
        raise ValueError(
            f"{what} '{raw}' is not an absolute {platform} path: a file for another "
            f"machine needs its full path there ({example})"
        )
    return path


def is_interpreter(platform: Platform, program: str) -> bool:
    """Whether ``program`` names a Python interpreter (by its file name, as ``platform``
    splits paths), as opposed to the ``reaper`` script or another wrapper."""
    return _INTERPRETER.fullmatch(path_flavour(platform)(program).name) is not None


def resolve_program(
    platform: Platform, executable: str | None = None
) -> tuple[tuple[str, ...], bool]:
    """The absolute argv that starts `reaper` for ``platform``, and whether it is a placeholder.

    Preference, for the platform we run on: ``executable`` if given (followed by
    ``-m overseer.cli`` when it is a Python interpreter); the ``reaper`` script installed next
    to this interpreter (the same environment as the running CLI, unlike a ``reaper`` found
    first on PATH); else this interpreter with ``-m overseer.cli``. On Windows the default is
    ``pythonw.exe -m overseer.cli``: the console script would open a console window at every
    logon, pythonw has none. Raises ValueError for a relative ``executable`` for another
    platform.
    """
    if executable is not None:
        if platform == current_platform():
            executable = _local_program(executable)
        program = str(target_path(platform, executable, "--executable"))
        # An interpreter would otherwise run `python start --foreground`: a script named start.
        extra = MODULE_ARGS if is_interpreter(platform, program) else ()
        return (program, *extra), False
    if platform != current_platform():
        return PLACEHOLDER_PROGRAM[platform], True
    interpreter = Path(os.path.abspath(sys.executable))
    if platform == "windows":
        pythonw = interpreter.with_name("pythonw.exe")
        chosen = pythonw if pythonw.is_file() else interpreter
        return (str(chosen), *MODULE_ARGS), False
    script = interpreter.with_name("reaper")
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),), False
    return (str(interpreter), *MODULE_ARGS), False


def _local_program(executable: str) -> str:
    """``executable`` for this machine: a bare name is looked up on PATH, as a shell would,
    not taken from the working directory (``python3`` is not ``./python3``)."""
    if os.sep in executable or (os.altsep is not None and os.altsep in executable):
        return executable
    if sys.platform == "win32":
        # shutil.which looks in the working directory first on Windows: a pythonw.exe there
        # would become what runs at every logon. A full path leaves nothing to guess.
        raise ValueError(f"--executable '{executable}': give its full path on Windows")
    found = shutil.which(executable)
    if found is None:
        raise ValueError(f"--executable '{executable}' is not on PATH: give its full path")
    return found


def write_atomically(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` (creating its directory); return whether the content changed.

    Via a temporary file and rename so that a service manager reading the directory never sees
    half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        changed = path.read_bytes() != data
    except FileNotFoundError:
        changed = True
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return changed


def read_text(path: Path, encoding: str = "utf-8") -> str | None:
    try:
        return path.read_text(encoding=encoding)
    except (FileNotFoundError, UnicodeError):
        return None
