"""A mission state stored in parts, so that a save writes only what changed.

A MissionState is a small *head* (status, options, counters, times, version) plus three maps
that grow with the mission: hosts, pending tasks and completed task records. A 1000-host
mission is megabytes of JSON, and the engine saves after every batch of results, though a
batch changes a few hosts and tasks. So stores keep each map entry as its own document
and, per mission, a :class:`PartTracker` remembers the objects of the copies they last
wrote (and read since) at the stored revision:

* a host is written again unless it is one of those objects and no field of it was
  assigned since;
* a pending task or a task record is frozen, so "changed" means "replaced": written again
  unless it is one of those objects;
* entries that are gone from a map are deleted; the head is always written.

The objects of a copy report their own changes to it: a host each field assignment, the
two task maps (``TrackedDict``) each key they set or delete. So saving the state an engine
keeps, made of the objects of the copy saved last, costs what its change touched, not a walk
over the mission; any other state is compared with the copies entry by entry.

Every save also stores a random *revision*. A save that writes only a delta names the
revision it is a delta of, and the store refuses it (a conflict: the engine reloads and
tries again) unless that revision is still the stored one. So a delta is only ever applied
to the exact parts it was computed against — even when Redis lost acknowledged writes (a
crash under ``appendfsync everysec``, a failover) and a version number comes round twice.
Anything else is written in full. The tracker's guesses only decide how much is written.

The sequences of a HostState are tuples and its ``facts`` (like a Task's ``params`` and a
HostSpec's ``options``) a read-only mapping, so that nothing can change in place: a change
no assignment records would not be saved.
"""

from __future__ import annotations

import json
import operator
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel

from infra.codec import decode
from reaper_engine.models import HostState, MissionState, PendingTask, TaskRecord
from reaper_engine.models.tracked import TrackedDict, tracked

_Part = TypeVar("_Part", PendingTask, TaskRecord)

HEAD_EXCLUDES = frozenset({"hosts", "pending_tasks", "completed_tasks"})


def new_revision() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class StateDelta:
    """What to write for one save: JSON documents by id, and ids to delete."""

    head: str
    # None: write every part and drop whatever else the store holds for the mission.
    # Otherwise the revision the rest is a delta of: the store must still hold it.
    base: str | None
    host_order: tuple[str, ...] = ()  # the hosts' order, kept apart (written when full)
    hosts: dict[str, str] = field(default_factory=dict)
    pending: dict[str, str] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)
    pending_gone: list[str] = field(default_factory=list)
    done_gone: list[str] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return self.base is None


@dataclass(slots=True)
class _Changed:
    """The keys changed in one copy's objects since the copy was stored: its hosts report
    their field assignments here, its two task maps (TrackedDicts) their edits."""

    hosts: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)
    done: set[str] = field(default_factory=set)

    def clear(self) -> None:
        self.hosts.clear()
        self.pending.clear()
        self.done.clear()


@dataclass(slots=True)
class _Copy:
    """The objects of one copy of a mission, as stored at (version, revision), and the
    keys changed in them since (``changed``, which those objects fill themselves).

    A copy made from a state (``of``) has every host and both task maps of that state
    report to its ``changed``; a save of a state made of a copy's objects carries that copy
    forward (``advance``), any other save or load makes a copy of its own. An object
    reports to one place only, the last that asked, which ``fits`` checks."""

    version: int
    revision: str
    order: tuple[str, ...]
    hosts: dict[str, HostState]  # as stored
    pending: dict[str, PendingTask]
    done: dict[str, TaskRecord]
    # The state's own two maps, to know a state made of this copy's objects again.
    pending_map: dict[str, PendingTask]
    done_map: dict[str, TaskRecord]
    changed: _Changed

    @classmethod
    def of(cls, state: MissionState, revision: str) -> _Copy:
        changed = _Changed()
        for key, host in state.hosts.items():
            host.watch(changed.hosts, key)
        # A map that cannot report (a plain dict) leaves the copy to the slow path.
        if isinstance(state.pending_tasks, TrackedDict):
            state.pending_tasks.watch = changed.pending
        if isinstance(state.completed_tasks, TrackedDict):
            state.completed_tasks.watch = changed.done
        return cls(
            state.version,
            revision,
            tuple(state.hosts),
            dict(state.hosts),
            dict(state.pending_tasks),
            dict(state.completed_tasks),
            state.pending_tasks,
            state.completed_tasks,
            changed,
        )

    def same_as(self, other: _Copy) -> bool:
        return (self.version, self.revision) == (other.version, other.revision)

    def fits(self, state: MissionState) -> bool:
        """Whether ``state`` is made of this copy's objects, all still reporting here: then
        ``changed`` holds every key in which it differs from what is stored. (Another
        tracker, or another copy, may have had them report elsewhere since.) Two walks over
        the hosts, both in C."""
        pending, done = state.pending_tasks, state.completed_tasks
        return (
            pending is self.pending_map
            and done is self.done_map
            and isinstance(pending, TrackedDict)
            and isinstance(done, TrackedDict)
            and pending.watch is self.changed.pending
            and done.watch is self.changed.done
            and len(state.hosts) == len(self.hosts)
            and all(map(operator.is_, state.hosts.values(), self.hosts.values()))
            and HostState.all_watched_by(state.hosts, self.changed.hosts)
        )

    def unchanged_host(self, key: str, host: HostState) -> bool:
        return (
            self.hosts.get(key) is host
            and host.watched_by(self.changed.hosts, key)
            and key not in self.changed.hosts
        )

    def advance(self, state: MissionState, version: int, revision: str) -> None:
        """``state``, which fits this copy, was stored: this copy becomes it, in what the
        save changed (its hosts are the same objects)."""
        for key in self.changed.pending:
            _follow(self.pending, state.pending_tasks, key)
        for key in self.changed.done:
            _follow(self.done, state.completed_tasks, key)
        self.changed.clear()
        self.version, self.revision = version, revision


def _follow(mirror: dict[str, _Part], source: Mapping[str, _Part], key: str) -> None:
    value = source.get(key)
    if value is None:
        mirror.pop(key, None)
    else:
        mirror[key] = value


class PartTracker:
    """Per mission, the copies one store instance wrote (and read since) at the stored
    revision (thread-safe).

    Only missions this store has saved are tracked, so a process that only reads (a
    dashboard, ``mission status``) keeps nothing alive; and only the ``missions`` saved
    last, while they are running. Per mission: the copy saved last (the one an engine keeps
    and goes on changing), and up to ``copies - 1`` copies loaded since at the same revision
    (the engine's own reload, after a conflict or a cancel).

    A save of the state an engine keeps costs what its change touched: that state is made
    of the objects of the copy saved last, which report their changes to it (``_Copy``).
    Any other state is compared with every copy, entry by entry.
    """

    def __init__(self, copies: int = 3, missions: int = 256) -> None:
        if copies < 1 or missions < 1:
            raise ValueError("a PartTracker keeps at least one copy of one mission")
        self._lock = threading.Lock()
        self._copies = copies
        self._missions = missions
        # All copies of one mission are of one revision; least recently saved first.
        self._seen: OrderedDict[str, list[_Copy]] = OrderedDict()

    def delta(self, state: MissionState, head: str, *, full: bool = False) -> StateDelta:
        """What saving ``state`` (its head already encoded as ``head``) has to write:
        everything if ``full``, or unless this store knows the stored parts at
        ``state.version``."""
        with self._lock:
            seen = list(self._seen.get(state.mission_id, ()))
        known = seen[0] if seen else None
        if (
            full
            or known is None
            or known.version != state.version
            # The host order is written only in full.
            or known.order != tuple(state.hosts)
        ):
            return StateDelta(
                head=head,
                base=None,
                host_order=tuple(state.hosts),
                hosts={k: v.model_dump_json() for k, v in state.hosts.items()},
                pending={k: v.model_dump_json() for k, v in state.pending_tasks.items()},
                done={k: v.model_dump_json() for k, v in state.completed_tasks.items()},
            )
        base = next((copy for copy in seen if copy.fits(state)), None)
        if base is not None:
            # Snapshots (each taken in C): the sets stay live while their keys are encoded.
            hosts, pending, done = (
                tuple(base.changed.hosts),
                tuple(base.changed.pending),
                tuple(base.changed.done),
            )
            return StateDelta(
                head=head,
                base=known.revision,
                hosts={k: state.hosts[k].model_dump_json() for k in hosts},
                pending=_touched(state.pending_tasks, base.pending, pending),
                done=_touched(state.completed_tasks, base.done, done),
                pending_gone=_gone(state.pending_tasks, base.pending, pending),
                done_gone=_gone(state.completed_tasks, base.done, done),
            )
        return StateDelta(
            head=head,
            base=known.revision,
            hosts={
                k: h.model_dump_json()
                for k, h in state.hosts.items()
                if not any(copy.unchanged_host(k, h) for copy in seen)
            },
            pending=_replaced(state.pending_tasks, [c.pending for c in seen]),
            done=_replaced(state.completed_tasks, [c.done for c in seen]),
            # Every copy of one revision has the same keys: the stored ones.
            pending_gone=[k for k in known.pending if k not in state.pending_tasks],
            done_gone=[k for k in known.done if k not in state.completed_tasks],
        )

    def saved(self, state: MissionState, revision: str) -> None:
        """``state`` was just stored, as ``revision``."""
        with self._lock:
            if state.status.is_terminal:  # rarely saved again: a full write then is fine
                self._seen.pop(state.mission_id, None)
                return
            seen = self._seen.get(state.mission_id, ())
            base = next((copy for copy in seen if copy.fits(state)), None)
            if base is not None:
                base.advance(state, state.version, revision)
            else:
                base = _Copy.of(state, revision)
            self._seen[state.mission_id] = [base]
            self._seen.move_to_end(state.mission_id)
            while len(self._seen) > self._missions:
                self._seen.popitem(last=False)

    def loaded(self, state: MissionState, revision: str) -> None:
        """``state`` was just read, stored as ``revision``."""
        with self._lock:
            current = self._seen.get(state.mission_id)
            if current is None:
                return  # a mission this store does not save: nothing to keep alive
            if state.status.is_terminal:
                del self._seen[state.mission_id]
                return
            copy = _Copy.of(state, revision)
            if copy.same_as(current[0]):
                # Keep the copy saved last (the one most likely saved next) and the newest
                # loaded ones beside it.
                loaded = [*current[1:], copy]
                current[1:] = loaded[max(0, len(loaded) - (self._copies - 1)) :]
            else:
                self._seen[state.mission_id] = [copy]  # what is stored now, whatever we knew

    def forget(self, mission_id: str) -> None:
        with self._lock:
            self._seen.pop(mission_id, None)


def _touched(
    now: Mapping[str, _Part], stored: Mapping[str, _Part], keys: Iterable[str]
) -> dict[str, str]:
    """Documents of the entries under ``keys`` that ``now`` holds and are not the stored
    objects (a key set and set back again is not written twice)."""
    out: dict[str, str] = {}
    for key in keys:
        value = now.get(key)
        if value is not None and value is not stored.get(key):
            out[key] = value.model_dump_json()
    return out


def _gone(now: Mapping[str, _Part], stored: Mapping[str, _Part], keys: Iterable[str]) -> list[str]:
    return [key for key in keys if key not in now and key in stored]


def _replaced(
    now: Mapping[str, BaseModel], seen: Sequence[Mapping[str, BaseModel]]
) -> dict[str, str]:
    """Documents of the entries of ``now`` that are not one of the objects seen."""
    if len(seen) == 1:
        (before,) = seen
        return {k: v.model_dump_json() for k, v in now.items() if before.get(k) is not v}
    return {k: v.model_dump_json() for k, v in now.items() if not any(b.get(k) is v for b in seen)}


def head_json(state: MissionState) -> str:
    return state.model_dump_json(exclude=set(HEAD_EXCLUDES))


def assemble(
    head: str | bytes,
    hosts: Mapping[str, str | bytes],
    pending: Mapping[str, str | bytes],
    done: Mapping[str, str | bytes],
    *,
    host_order: Sequence[str] = (),
) -> MissionState:
    """The MissionState whose parts these are; a defect raises MessageDecodeError.

    Stores need not keep the order of a map's entries (a Redis hash does not), so it is
    restored here, the same for every store: hosts in ``host_order`` (the inventory's), then
    any others by id; pending tasks by creation, records by completion, ties by task id."""
    inner = _text(head).strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        inner = "{}"  # not an object: let decode say what is missing
    body = inner[1:-1].strip()
    rank = {host_id: n for n, host_id in enumerate(host_order)}
    doc = "".join(
        [
            '{"hosts":',
            _object(hosts, sorted(hosts, key=lambda h: (rank.get(h, len(rank)), h))),
            ',"pending_tasks":',
            _object(pending, pending),
            ',"completed_tasks":',
            _object(done, done),
            "," if body else "",
            body,
            "}",
        ]
    )
    state = decode(MissionState, doc)
    # Set without validate_assignment: the same validated objects, in another order.
    state.__dict__["pending_tasks"] = tracked(
        dict(sorted(state.pending_tasks.items(), key=lambda kv: (kv[1].task.created_at, kv[0])))
    )
    state.__dict__["completed_tasks"] = tracked(
        dict(sorted(state.completed_tasks.items(), key=lambda kv: (kv[1].finished_at, kv[0])))
    )
    return state


def _object(parts: Mapping[str, str | bytes], order: Iterable[str]) -> str:
    return "{" + ",".join(f"{json.dumps(key)}:{_text(parts[key])}" for key in order) + "}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
