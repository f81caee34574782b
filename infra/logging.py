"""structlog, configured once per process: console for people, JSON lines for machines."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]


def configure_logging(
    fmt: LogFormat = "console", level: str | int = "info", stream: TextIO | None = None
) -> None:
    """Route structlog (and stdlib logging) to ``stream`` (stderr by default).

    Context bound with ``structlog.contextvars`` (mission_id, host_id, task_id) is merged into
    every event.
    """
    numeric = level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
    out = stream or sys.stderr
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty(), exception_formatter=_tracebacks())
    )
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        processors.append(structlog.processors.format_exc_info)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric, stream=out, format="%(levelname)s %(name)s: %(message)s")


def _tracebacks() -> structlog.typing.ExceptionRenderer:
    """Rich tracebacks when rich is there, but never with the frames' local variables: a
    local may hold a password, a key or a secret, and a log is read by more people."""
    if getattr(structlog.dev, "rich", None) is not None:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    return structlog.dev.plain_traceback
