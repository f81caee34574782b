"""The project's exception tree.

    ReaperError                      base of everything Reaper raises on purpose
    ├── ConfigError                  invalid configuration or inventory (says file, line, key)
    ├── MissionNotFoundError         no mission with that id
    ├── ConcurrentUpdateError        a mission was saved by someone else since it was loaded
    ├── MessageDecodeError           a queue/bus payload that is not a valid document
    └── AgentError                   raised while executing a task; carries error_code/retriable
        ├── TaskRefusedError         the task must not run (expired, wrong agent, bad params)
        ├── UnknownActionError       no handler for the task's action
        └── TransportError           talking to the host failed
            ├── HostUnreachableError the host could not be reached (retriable)
            └── RemoteCommandError   the host answered with a failure

Agents turn an AgentError into an error ResultEvent using its ``error_code`` and
``retriable``; any other exception becomes ``INTERNAL_ERROR``.
"""

from __future__ import annotations


class ReaperError(Exception):
    """Base class of Reaper's own exceptions."""


class ConfigError(ReaperError):
    """A configuration or inventory document is invalid."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.source = source
        self.key = key
        self.line = line
        where = ":".join(str(p) for p in (source, line) if p is not None)
        parts = [p for p in (where, f"key '{key}'" if key else None) if p]
        super().__init__(": ".join([*parts, message]))


class MissionNotFoundError(ReaperError):
    """No mission with the given id exists."""


class ConcurrentUpdateError(ReaperError):
    """Optimistic-concurrency conflict: reload the mission and apply the change again."""


class MessageDecodeError(ReaperError):
    """A payload read from a queue or bus is not a valid document."""


class AgentError(ReaperError):
    """An error raised while executing a task, reported as an error ResultEvent."""

    error_code = "AGENT_ERROR"
    retriable = False

    def __init__(
        self, message: str, *, error_code: str | None = None, retriable: bool | None = None
    ) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code
        if retriable is not None:
            self.retriable = retriable


class TaskRefusedError(AgentError):
    error_code = "TASK_REFUSED"


class UnknownActionError(AgentError):
    error_code = "UNKNOWN_ACTION"


class TransportError(AgentError):
    error_code = "TRANSPORT_ERROR"
    retriable = True


class HostUnreachableError(TransportError):
    error_code = "HOST_UNREACHABLE"
    retriable = True


class RemoteCommandError(TransportError):
    error_code = "REMOTE_COMMAND_FAILED"
    retriable = False
