"""Where the daemon keeps its files.

* PID file: ``daemon.pid_file`` if set, else ``$XDG_RUNTIME_DIR/reaper/reaper.pid`` (the
  per-login tmpfs the XDG spec meant for exactly this), else
  ``$XDG_STATE_HOME/reaper/reaper.pid`` (``~/.local/state`` when unset).
* State file and daemon log: ``$XDG_STATE_HOME/reaper/state.json`` and ``daemon.log``; with an
  explicit ``daemon.pid_file``, next to it (``<pid file>.state.json``, ``<pid file>.log``) so
  that two daemons with different PID files never share state.

Relative or empty XDG variables are ignored, as the XDG spec requires.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reaper_engine.config import DaemonSettings


def _xdg(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name, "")
    return Path(value) if value and os.path.isabs(value) else None


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME", "")
    return Path(home) if home else Path.home()


def state_home(env: Mapping[str, str]) -> Path:
    return _xdg(env, "XDG_STATE_HOME") or _home(env) / ".local" / "state"


def _expand(value: str, env: Mapping[str, str]) -> Path:
    if value == "~" or value.startswith("~/"):
        return _home(env) / value[2:]
    return Path(os.path.expanduser(value)).absolute()


@dataclass(frozen=True, slots=True)
class DaemonPaths:
    pid_file: Path
    state_file: Path
    log_file: Path

    @classmethod
    def resolve(cls, settings: DaemonSettings, env: Mapping[str, str]) -> DaemonPaths:
        if settings.pid_file:
            pid_file = _expand(settings.pid_file, env)
            return cls(
                pid_file=pid_file,
                state_file=pid_file.with_name(pid_file.name + ".state.json"),
                log_file=pid_file.with_name(pid_file.name + ".log"),
            )
        state_dir = state_home(env) / "reaper"
        runtime = _xdg(env, "XDG_RUNTIME_DIR")
        pid_dir = runtime / "reaper" if runtime is not None else state_dir
        return cls(
            pid_file=pid_dir / "reaper.pid",
            state_file=state_dir / "state.json",
            log_file=state_dir / "daemon.log",
        )
