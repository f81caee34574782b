"""How an agent reaches a host: simulated (a fixture), local (psutil), ssh, winrm."""

from agents.transports.base import ProcessListing, SignalDelivery, Transport, TransportFactory

__all__ = ["ProcessListing", "SignalDelivery", "Transport", "TransportFactory"]
