"""What a process reader returns, and the interface every reader implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from reaper_engine.models import ProcessInfo

VANISHED = "vanished"
ACCESS_DENIED = "access_denied"
MALFORMED_STAT = "malformed_stat"
MALFORMED_STATUS = "malformed_status"
READ_ERROR = "read_error"


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    """One pass over the process table.

    ``skipped`` counts, by reason, the entries that were seen but could not be turned into a
    `ProcessInfo`: a scan that silently dropped processes would look cleaner than the host is.
    ``taken_at`` is ``time.time()`` when the pass began: every process listed existed at some
    moment between ``taken_at`` and the end of the pass.
    """

    processes: tuple[ProcessInfo, ...]
    skipped: dict[str, int] = field(default_factory=dict)
    taken_at: float = 0.0

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


class ProcessReader(Protocol):
    """Lists the processes of the local machine."""

    def read(self) -> ProcessSnapshot:
        """Every process that could be read; never raises for one bad entry."""
        ...

    def get(self, pid: int) -> ProcessInfo | None:
        """One process, or None if it does not exist (any more) or cannot be read."""
        ...
