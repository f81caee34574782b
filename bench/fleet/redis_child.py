"""The benchmark's own redis-server, and the signal handlers that make sure it is stopped."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import FrameType

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisChild:
    """A redis-server of our own, as tests/redis_server.py starts one (plus AOF everysec)."""

    def __init__(self, directory: Path, *, aof: bool) -> None:
        self.directory = directory
        self.port = free_port()
        assert REDIS_SERVER is not None  # main() checks
        self.argv = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(directory / "redis.log"),
        ]
        if aof:
            self.argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not self._pong():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {self.directory}/redis.log)")
            time.sleep(0.02)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def server_version(self) -> str:
        out = subprocess.run(
            [self.argv[0], "--version"], capture_output=True, text=True, check=False
        )
        return out.stdout.split(" v=")[1].split()[0] if " v=" in out.stdout else "?"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: redis-server is stopped


def install_exit_handlers() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGHUP, _exit_on_sigterm)
