"""structlog loggers that import structlog only when something is logged.

``import structlog`` costs ~90 ms (it loads its console renderer, tracebacks, Rich and
asyncio): over a third of a one-shot ``reaper scan``, which usually logs nothing. Modules on
the scan path therefore take their logger from :func:`get_logger` instead of
``structlog.get_logger``: the same logger, created on its first call.

A command that logs rarely can also defer its logging configuration
(:func:`defer_configuration`): the configuration is applied, and structlog imported, just
before the first event its ``gate`` lets through; events the gate refuses (below the level,
or dropped by the configuration anyway) cost nothing. The gate is a pre-filter only: it
must never refuse an event the configuration would print.

This module imports nothing at module level (no structlog, no logging).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any

Gate = Callable[[int, str], bool]
"""``gate(level, event)``: whether the pending configuration might print this event."""

# stdlib logging's numeric levels, which structlog uses too.
_LEVELS = {
    "debug": 10,
    "info": 20,
    "msg": 20,
    "warning": 30,
    "warn": 30,
    "error": 40,
    "err": 40,
    "exception": 40,
    "critical": 50,
    "fatal": 50,
}

_pending: Callable[[], None] | None = None
_gate: Gate | None = None


def defer_configuration(configure: Callable[[], None], gate: Gate) -> None:
    """Run ``configure`` (which configures structlog) before the first event ``gate`` lets
    through; until then, events it refuses are dropped without importing structlog."""
    global _pending, _gate
    _pending, _gate = configure, gate


def cancel_deferred() -> None:
    """Forget a configuration that was never needed (nothing was logged)."""
    global _pending, _gate
    _pending, _gate = None, None


def structlog_module() -> ModuleType:
    """structlog, imported now, with any deferred configuration applied first."""
    global _pending, _gate
    import structlog  # noqa: PLC0415 - imported on first use: the point of this module

    configure, _pending, _gate = _pending, None, None
    if configure is not None:
        configure()
    return structlog


def bound_contextvars(**values: Any) -> AbstractContextManager[None]:
    """``structlog.contextvars.bound_contextvars``."""
    manager: AbstractContextManager[None] = structlog_module().contextvars.bound_contextvars(
        **values
    )
    return manager


def get_logger(*args: Any, **initial_values: Any) -> LazyLogger:
    """``structlog.get_logger(*args, **initial_values)``, created on first use."""
    return LazyLogger(*args, **initial_values)


class LazyLogger:
    """Stands in for ``structlog.get_logger(...)``: the logging methods, and anything else
    (``bind``, ``new`` ...) by delegation to the real logger."""

    __slots__ = ("_args", "_initial", "_logger")

    def __init__(self, *args: Any, **initial_values: Any) -> None:
        self._args = args
        self._initial = initial_values
        self._logger: Any = None

    def _real(self) -> Any:
        if _pending is not None or self._logger is None:
            structlog = structlog_module()
            if self._logger is None:
                self._logger = structlog.get_logger(*self._args, **self._initial)
        return self._logger

    def _emit(self, method: str, level: int, event: Any, args: Any, kw: Any) -> Any:
        gate = _gate
        if _pending is not None and gate is not None and not gate(level, str(event)):
            return None
        return getattr(self._real(), method)(event, *args, **kw)

    def debug(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._emit("debug", 10, event, args, kw)

    def info(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._emit("info", 20, event, args, kw)

    def warning(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._emit("warning", 30, event, args, kw)

    def error(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._emit("error", 40, event, args, kw)

    def exception(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._emit("exception", 40, event, args, kw)

    def critical(self, event: Any = None, *args: Any, **kw: Any) -> Any:
        return self._emit("critical", 50, event, args, kw)

    def log(self, level: int, event: Any = None, *args: Any, **kw: Any) -> Any:
        gate = _gate
        if _pending is not None and gate is not None and not gate(level, str(event)):
            return None
        return self._real().log(level, event, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never the slots (copy, pickle), nor private names
            raise AttributeError(name)
        level = _LEVELS.get(name)
        if level is not None:  # warn, err, fatal, msg: aliases of the methods above
            return lambda event=None, *args, **kw: self._emit(name, level, event, args, kw)
        return getattr(self._real(), name)
