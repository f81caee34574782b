"""One agent class per OS queue. They share the handlers; what differs per OS lives in the
transports (how processes are listed and signalled there)."""

from __future__ import annotations

from typing import ClassVar

from agents.base import BaseAgent
from reaper_engine.models import AgentType


class LinuxAgent(BaseAgent):
    agent_type: ClassVar[AgentType] = AgentType.LINUX


class MacAgent(BaseAgent):
    agent_type: ClassVar[AgentType] = AgentType.MACOS


class WindowsAgent(BaseAgent):
    agent_type: ClassVar[AgentType] = AgentType.WINDOWS


AGENTS: dict[AgentType, type[BaseAgent]] = {
    cls.agent_type: cls for cls in (LinuxAgent, MacAgent, WindowsAgent)
}
"""The registry: which class serves which queue."""
