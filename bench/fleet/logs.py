"""The logging configurations the benchmark switches between."""

from __future__ import annotations

import logging
import os
import sys

import structlog

from infra.logging import configure_logging


class LogSwitch:
    """structlog at WARNING (nothing rendered: the engine's own cost), or as ``reaper engine``
    runs by default (INFO, JSON lines; here to /dev/null)."""

    def __init__(self) -> None:
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - closed by close()
        self.info()
        logging.getLogger().setLevel(logging.WARNING)  # basicConfig's root logger: rq's chatter
        self.quiet()

    def info(self) -> None:
        configure_logging("json", "info", stream=self._devnull)

    def quiet(self) -> None:
        structlog.configure(
            processors=structlog.get_config()["processors"],
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )

    def close(self) -> None:
        self._devnull.close()
