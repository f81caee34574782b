"""A real ``redis-server`` child for tests: a free loopback port, its own directory, always reaped.

Tests that need Redis semantics fakeredis cannot give (a restart, AOF persistence, real
blocking and client ids) run against this. ``restart()`` keeps the port and the directory, so
with ``appendonly=True`` the data comes back and clients reconnect to the same URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

BINARY = "redis-server"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str | None:
    return shutil.which(BINARY)


def require_redis_server() -> str:
    """The binary's path; skip the test without one, but fail under CI (which must run them)."""
    binary = redis_server_binary()
    if binary is None:
        reason = f"no '{BINARY}' on PATH: the tests marked 'redis' need a real Redis"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}, and CI is set so they must run", pytrace=False)
        pytest.skip(reason)
    return binary


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1. Use as a context manager, or call
    ``start()`` and make sure ``stop()`` runs (the fixtures do it in a ``finally``)."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        binary: str | None = None,
        port: int | None = None,
        password: str | None = None,
    ) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.binary = binary or require_redis_server()
        self.port = port or free_port()
        self.password = password  # requirepass: clients must AUTH with it
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients use (with the password, if the server requires one)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def _argv(self) -> list[str]:
        argv = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_file),
        ]
        if self.appendonly:
            # fsync on every write: a test that restarts the server must find everything
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def start(self) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("redis-server is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self._argv(),
            start_new_session=True,  # never in pytest's process group: a stray signal can't hit us
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pause = 0.005
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode} before answering; "
                    f"log:\n{self._log_tail()}"
                )
            if self.ping():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{START_TIMEOUT}s; log:\n{self._log_tail()}"
                )
            time.sleep(pause)  # waiting for a condition with a deadline, not a fixed delay
            pause = min(pause * 2, 0.1)

    def ping(self) -> bool:
        """True if the server answers PING now (a raw socket: no client library state)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                if self.password:
                    # The inline protocol: a password with spaces or quotes is not supported.
                    sock.sendall(f"AUTH {self.password}\r\n".encode())
                    if not sock.recv(64).startswith(b"+OK"):
                        return False
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM (Redis flushes its AOF and exits), SIGKILL if it does not within the limit."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """Stop and start again on the same port and directory."""
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
