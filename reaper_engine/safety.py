"""Protections applied to every signal, whatever rule, config, planner or caller asked.

``SafetyPolicy.protection_for`` names the first protection that applies to a process, or
returns None. The terminator consults it immediately before each signal; detection uses it
to mark findings as protected so that nobody plans to kill them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reaper_engine.models import ProcessInfo, ProcessState
from reaper_engine.models.process import START_TIME_TOLERANCE
from reaper_engine.patterns import Regexes

DEFAULT_WHITELIST: tuple[str, ...] = (
    "systemd",
    "init",
    "launchd",
    "gnome-shell",
    "Xorg",
    "Xwayland",
    "sshd",
    "login",
    "claude",
    "cursor",
    "code",
    "vim",
    "nvim",
    "emacs",
    # Windows sessions and shells: killing them logs people out.
    "System",
    "smss",
    "csrss",
    "wininit",
    "winlogon",
    "services",
    "lsass",
    "explorer",
    "dwm",
)

_PRIVILEGED_USERS = frozenset(
    {
        "root",
        "system",
        "nt authority\\system",
        "local service",
        "nt authority\\local service",
        "network service",
        "nt authority\\network service",
    }
)


class SafetySettings(BaseModel):
    """The ``[safety]`` section of the configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    whitelist_processes: tuple[str, ...] = DEFAULT_WHITELIST
    whitelist_patterns: Regexes = ()
    min_pid: int = Field(default=1000, ge=0)
    protect_root: bool = True
    # Seed 000's key, kept so its config files load: the reaper's ancestors are always
    # protected (DESIGN invariant 2), so the only value accepted is true.
    protect_shell_ancestors: Literal[True] = True
    # Seed 002's scope mode: touch only processes spawned after the reaper's baseline, or only
    # descendants of one process (scope_root_pid; default: the reaper itself).
    scope: Literal["all", "baseline", "descendants"] = "all"
    scope_root_pid: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _root_needs_descendants(self) -> SafetySettings:
        if self.scope_root_pid is not None and self.scope != "descendants":
            raise ValueError("scope_root_pid only applies with scope = 'descendants'")
        return self


@dataclass(frozen=True, slots=True)
class Vantage:
    """Who is acting on the host: the account, and (locally) the reaper's own process tree.

    ``baseline_at`` (when the reaper took its baseline: every process started before then is
    pre-existing) and ``descendants`` (pids under the scope root) feed the scope modes; when
    a mode needs one that is missing, every process is out of scope (fail closed).
    """

    user: str | None = None
    uid: int | None = None
    pid: int | None = None
    ancestors: frozenset[int] = field(default_factory=frozenset)
    pgid: int | None = None
    sid: int | None = None
    baseline_at: float | None = None
    descendants: frozenset[int] | None = None


def normalise_name(name: str) -> str:
    """Compare names the way people write them: case-insensitive, without ``.exe``."""
    base = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].lower()
    return base.removesuffix(".exe")


class SafetyPolicy:
    def __init__(self, settings: SafetySettings, vantage: Vantage) -> None:
        self.settings = settings
        self.vantage = vantage
        self._whitelist = frozenset(normalise_name(n) for n in settings.whitelist_processes)
        self._patterns = tuple(re.compile(p) for p in settings.whitelist_patterns)
        self._me_user = (vantage.user or "").lower() or None

    def protection_for(self, proc: ProcessInfo) -> str | None:
        """The name of the first protection covering ``proc``, or None if it may be signalled."""
        me = self.vantage
        if proc.pid <= 1:
            return f"pid_{proc.pid}"
        if proc.is_kernel_thread:
            return "kernel_thread"
        if me.pid is not None and proc.pid == me.pid:
            return "self"
        if proc.pid in me.ancestors:
            return "ancestor"
        if me.pgid is not None and proc.pgid == me.pgid:
            return "own_process_group"
        if me.sid is not None and proc.sid == me.sid:
            return "own_session"
        if proc.status is ProcessState.ZOMBIE:
            # Already dead; no signal can help. Its parent must wait() for it: name the parent.
            return f"zombie:parent={proc.ppid}"
        out_of_scope = self._outside_scope(proc)
        if out_of_scope is not None:
            return out_of_scope
        if proc.pid < self.settings.min_pid:
            return "below_min_pid"
        if self.settings.protect_root and self._is_privileged(proc):
            return "root_owned"
        if self._is_other_user(proc):
            return "other_user"
        whitelisted_as = self._whitelisted_as(proc)
        if whitelisted_as is not None:
            return f"whitelisted:{whitelisted_as}"
        return None

    def _outside_scope(self, proc: ProcessInfo) -> str | None:
        scope = self.settings.scope
        if scope == "baseline":
            # By start time, not by a list of PIDs: a process the baseline could not read
            # (permissions, a transient error) is still recognised as pre-existing.
            if self.vantage.baseline_at is None:
                return "outside_scope:no_baseline"
            if proc.create_time <= self.vantage.baseline_at + START_TIME_TOLERANCE:
                return "outside_scope:baseline"
        elif scope == "descendants":
            allowed = self.vantage.descendants
            if allowed is None or proc.pid not in allowed:
                return "outside_scope:descendants"
        return None

    def _is_privileged(self, proc: ProcessInfo) -> bool:
        return proc.uid == 0 or (proc.user or "").lower() in _PRIVILEGED_USERS

    def _is_other_user(self, proc: ProcessInfo) -> bool:
        me = self.vantage
        if me.uid is not None and proc.uid is not None:
            return proc.uid != me.uid
        if self._me_user is not None and proc.user is not None:
            return proc.user.lower() != self._me_user
        return True  # we cannot tell whose it is, or who we are: not ours to signal

    def _whitelisted_as(self, proc: ProcessInfo) -> str | None:
        """The whitelist entry (name or pattern) that covers ``proc``, if any."""
        names = [normalise_name(proc.name)]
        if proc.cmdline:
            names.append(normalise_name(proc.cmdline[0]))
        for name in names:
            if name in self._whitelist:
                return name
        command = proc.command
        return next((p.pattern for p in self._patterns if p.search(command)), None)


def descendants_of(root_pid: int, processes: Iterable[ProcessInfo]) -> frozenset[int]:
    """PIDs of every process below ``root_pid`` in the parent tree (not ``root_pid`` itself).

    Never ``root_pid``, even when parent links loop back to it, as they can in a table read
    while PIDs were being reused."""
    children: dict[int, list[int]] = {}
    for proc in processes:
        if proc.pid != proc.ppid:
            children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    stack = list(children.get(root_pid, ()))
    while stack:
        pid = stack.pop()
        if pid != root_pid and pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return frozenset(found)


def policy_for(
    settings: SafetySettings, vantage: Vantage, processes: Iterable[ProcessInfo]
) -> SafetyPolicy:
    """The policy for one look at a host: resolves the descendants scope from its table."""
    if settings.scope == "descendants":
        root = settings.scope_root_pid or vantage.pid
        if root is not None:
            vantage = replace(vantage, descendants=descendants_of(root, processes))
    return SafetyPolicy(settings, vantage)
