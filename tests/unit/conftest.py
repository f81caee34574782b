"""Fixtures of the unit tests: a throwaway home directory, an environment naming it, and a
project directory with a nested working directory (used by the reaper.toml tests)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return {"HOME": str(home)}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory with a nested working directory below it."""
    path = tmp_path / "work" / "project"
    (path / "src" / "deep").mkdir(parents=True)
    return path
