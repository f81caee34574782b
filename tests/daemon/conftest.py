"""Fixtures of the daemon tests: reuse the integration suite's child-process helpers."""

from __future__ import annotations

from tests.integration.conftest import Children, alive, children, wait_until

__all__ = ["Children", "alive", "children", "wait_until"]
