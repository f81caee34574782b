"""Helpers of the reaper.toml tests (test_config_*.py): write a file where the loader looks,
load from a directory, and catch the ConfigError a load raises.

The fixtures they go with (``home``, ``env``, ``project``) are in conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config_files import LoadedConfig, load_config
from reaper_engine.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def user_file(home: Path, text: str) -> Path:
    return write(home / ".config" / "reaper" / "reaper.toml", text)


def line_of(text: str, needle: str, occurrence: int = 0) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence]


def load(cwd: Path, env: dict[str, str], explicit: Path | None = None) -> LoadedConfig:
    return load_config(explicit=explicit, cwd=cwd, env=env)


def config_error(cwd: Path, env: dict[str, str], explicit: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(cwd, env, explicit)
    return info.value
