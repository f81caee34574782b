"""Signed task envelopes: only holders of the fleet secret can order work across the fleet.

Anyone who can write to Redis can push a job. Workers therefore run a task only if it comes in
an envelope whose HMAC-SHA256, keyed with the shared secret, matches the exact task bytes::

    {"v": 1, "task": "<the Task as JSON text>", "sig": "hmac-sha256:<hex>"}

The MAC covers the task text as sent (no re-serialisation, so nothing can drift between
signer and verifier) behind a domain prefix, so a MAC made for anything else never verifies
here. The task carries its own deadline: an envelope replayed after it is refused as expired.
The task id is the job id and results are applied once per task id, so a replay before the
deadline changes nothing.

``--insecure`` (no secret) produces ``"sig": null`` envelopes, which only an insecure worker
accepts; a worker that has a secret refuses them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from reaper_engine import SCHEMA_VERSION
from reaper_engine.errors import ReaperError
from reaper_engine.models import Task

ENVELOPE_VERSION = 1
MIN_SECRET_BYTES = 16
_DOMAIN = b"reaper-task-v1\n"
_SCHEME = "hmac-sha256:"


class SecretError(ReaperError):
    """The fleet secret is missing, unreadable or too short."""


class TaskRejectedError(ReaperError):
    """An envelope that must not run. ``task`` is set when its content could still be read
    (so the refusal can be reported against the task it claims to be)."""

    def __init__(self, code: str, message: str, task: Task | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.task = task


@dataclass(frozen=True, slots=True)
class TaskSigner:
    """Seals tasks into envelopes and opens them again. ``secret=None`` is insecure mode."""

    # Never in a repr: tracebacks that show locals, and debug logs, print reprs.
    secret: bytes | None = field(repr=False)

    def __post_init__(self) -> None:
        if self.secret is not None and len(self.secret) < MIN_SECRET_BYTES:
            raise SecretError(
                f"the fleet secret is {len(self.secret)} bytes; use at least "
                f"{MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
            )

    @property
    def insecure(self) -> bool:
        return self.secret is None

    def seal(self, task: Task) -> str:
        text = task.model_dump_json()
        sig = "null" if self.secret is None else json.dumps(_SCHEME + self._mac(text))
        # The text json.dumps({"v": ..., "task": text, "sig": sig}) makes, byte for byte
        # (tests/redis/test_rq_queue.py), without building the dict: a seal per dispatched
        # task is on the engine's hot path.
        return f'{{"v": {ENVELOPE_VERSION}, "task": {json.dumps(text)}, "sig": {sig}}}'

    def open(self, envelope: str | bytes, now: datetime) -> Task:
        """The task inside ``envelope``, or TaskRejectedError saying why not."""
        try:
            doc = json.loads(envelope)
        except (ValueError, UnicodeDecodeError) as err:
            raise TaskRejectedError("TASK_MALFORMED", f"envelope is not JSON: {err}") from None
        if not isinstance(doc, dict) or doc.get("v") != ENVELOPE_VERSION:
            raise TaskRejectedError("TASK_MALFORMED", "not a version-1 task envelope")
        text, sig = doc.get("task"), doc.get("sig")
        if not isinstance(text, str) or not (sig is None or isinstance(sig, str)):
            raise TaskRejectedError("TASK_MALFORMED", "envelope fields have the wrong types")
        try:
            task = Task.model_validate_json(text)
        except ValidationError as err:
            raise TaskRejectedError(
                "TASK_MALFORMED", f"not a valid Task: {err.error_count()} error(s)"
            ) from None
        if task.schema_version > SCHEMA_VERSION:
            raise TaskRejectedError(
                "TASK_MALFORMED",
                f"task has schema_version {task.schema_version}; this build reads up to "
                f"{SCHEMA_VERSION}",
            )
        if self.secret is not None:
            if sig is None:
                raise TaskRejectedError(
                    "TASK_UNSIGNED", "unsigned task refused: this worker has a secret", task
                )
            if not (
                sig.startswith(_SCHEME)
                and hmac.compare_digest(sig.removeprefix(_SCHEME), self._mac(text))
            ):
                raise TaskRejectedError(
                    "TASK_BAD_SIGNATURE",
                    "task signature does not match: tampered, or signed with another secret",
                    task,
                )
        if task.is_expired(now):
            raise TaskRejectedError(
                "TASK_EXPIRED", f"task deadline {task.deadline.isoformat()} has passed", task
            )
        return task

    def _mac(self, text: str) -> str:
        assert self.secret is not None
        return hmac.new(self.secret, _DOMAIN + text.encode("utf-8"), hashlib.sha256).hexdigest()
