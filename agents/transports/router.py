"""Pick the transport for a host by its ``transport`` kind."""

from __future__ import annotations

from collections.abc import Mapping

from agents.transports.base import Transport, TransportFactory
from reaper_engine.errors import TaskRefusedError
from reaper_engine.models import HostSpec, TransportKind


class TransportRouter:
    def __init__(self, factories: Mapping[TransportKind, TransportFactory]) -> None:
        self.factories = dict(factories)

    def open(self, spec: HostSpec) -> Transport:
        factory = self.factories.get(spec.transport)
        if factory is None:
            available = ", ".join(sorted(k.value for k in self.factories)) or "none"
            raise TaskRefusedError(
                f"this agent has no '{spec.transport}' transport (available: {available})",
                error_code="UNSUPPORTED_TRANSPORT",
            )
        return factory.open(spec)
