"""A simulated lab: hosts whose process tables come from fixtures, where a kill removes a row."""

from agents.simulation.lab import SimulatedHost, SimulatedLab, SimulatedTransport
from agents.simulation.table import ProcessTable, SimProcess, load_table

__all__ = [
    "ProcessTable",
    "SimProcess",
    "SimulatedHost",
    "SimulatedLab",
    "SimulatedTransport",
    "load_table",
]
