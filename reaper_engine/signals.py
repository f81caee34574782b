"""Portable signal names. Transports map them to the OS (on Windows: graceful close vs. force)."""

from __future__ import annotations

from enum import StrEnum


class Signal(StrEnum):
    SIGTERM = "SIGTERM"
    SIGKILL = "SIGKILL"
    SIGINT = "SIGINT"
    SIGHUP = "SIGHUP"
    SIGQUIT = "SIGQUIT"

    @classmethod
    def parse(cls, value: str | int) -> Signal:
        """Accept ``SIGTERM``, ``term``, ``TERM`` or the POSIX number ``15``."""
        text = str(value).strip().upper()
        if text.isdigit():
            try:
                return _BY_NUMBER[int(text)]
            except KeyError:
                raise ValueError(f"unsupported signal number {text}") from None
        name = text if text.startswith("SIG") else f"SIG{text}"
        try:
            return cls(name)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown signal '{value}' (allowed: {allowed})") from None


_BY_NUMBER = {
    15: Signal.SIGTERM,
    9: Signal.SIGKILL,
    2: Signal.SIGINT,
    1: Signal.SIGHUP,
    3: Signal.SIGQUIT,
}
