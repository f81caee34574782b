"""Run agents on threads and stop them cleanly."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from agents.base import BaseAgent


class AgentPool:
    def __init__(self, agents: Sequence[BaseAgent], *, threads_per_agent: int = 1) -> None:
        self.agents = list(agents)
        self.threads_per_agent = threads_per_agent
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> AgentPool:
        for agent in self.agents:
            for n in range(self.threads_per_agent):
                thread = threading.Thread(
                    target=agent.run,
                    args=(self._stop,),
                    name=f"{agent.agent_type}-{n}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop every agent; True if all threads ended within ``timeout``."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        # Interrupt again until all have ended: one that was about to block when the first
        # interrupt fired would otherwise wait out its whole consume timeout.
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            for agent in self.agents:
                agent.queue.interrupt()
            for thread in self._threads:
                thread.join(0.05)
        return not any(t.is_alive() for t in self._threads)
