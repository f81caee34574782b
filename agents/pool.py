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
        """Stop every agent; True if all threads ended within ``timeout``.

        One interrupt per queue is enough: it is sticky per thread (reaper_engine.ports), so
        a thread about to block when it fires does not block, and then sees ``_stop``.
        """
        self._stop.set()
        queues = {id(agent.queue): agent.queue for agent in self.agents}
        for queue in queues.values():
            queue.interrupt()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)
