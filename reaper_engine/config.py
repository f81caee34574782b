"""The configuration model (``reaper.toml``) and how configuration documents compose.

Pure: no file is read here. ``infra/config_files.py`` finds and parses the files, then uses
:func:`compose` to merge them over the defaults and :func:`validate_document` to build a
:class:`ReaperConfig`, keeping a :class:`Provenance` so that an error found after merging still
names the file (and the key inside it) that supplied the bad value.

Merge semantics (``merge_documents``):

* tables merge key by key, the later document winning;
* the ``rules`` array merges **by name**: an entry whose name already exists deep-merges into
  that rule (so a project file can change one condition), a new name is appended;
* every other array (``command_patterns``, ``health_checks`` ...) is replaced as a whole:
  merging lists element-wise has no meaning users could predict.

A project file (``.reaper.toml``, found by walking up from the working directory, so possibly
inside a repository nobody audited) may only **tighten** ``[safety]``:
:func:`restrict_project_safety` checks it against the user-level settings, and adds its
``whitelist_processes`` / ``whitelist_patterns`` to the effective lists instead of replacing them.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reaper_engine.rules import DEFAULT_RULES, Rule
from reaper_engine.safety import SafetySettings

Loc = tuple[str | int, ...]
"""A path into a document: ``("rules", 1, "conditions", "age_hours")``."""

LogLevel = Literal["debug", "info", "warning", "error"]

# A rule's fallback_signal may be "no fallback"; TOML has no null, so it is spelled "none".
NO_SIGNAL = "none"
# The two ways of writing a rule's minimum age: an override setting one replaces the other,
# otherwise overriding hung_test's age_hours with age_seconds would be a conflict.
_ALTERNATIVES = {"age_seconds": "age_hours", "age_hours": "age_seconds"}
# Arrays of tables whose entries carry a ``name`` that must be unique in one document.
NAMED_ARRAYS = ("rules", "health_checks")
# Keys that no longer exist, with what to tell someone whose file still has them.
_REMOVED: dict[Loc, str] = {
    ("safety", "protect_other_users"): (
        "other users' processes are always protected; delete this key"
    ),
}
# Keys kept so that old files load, whose only accepted value is true.
_ALWAYS_TRUE: dict[Loc, str] = {
    ("safety", "protect_shell_ancestors"): (
        "the reaper never signals the shells and processes above it; only true is accepted"
    ),
}


class DaemonSettings(BaseModel):
    """``[daemon]``: the periodic scan loop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    scan_interval_seconds: float = Field(default=60, gt=0)
    dry_run: bool = False
    pid_file: str | None = None


class LoggingSettings(BaseModel):
    """``[logging]``: the audit log. ``file`` is expanded ("~", XDG_DATA_HOME) by the I/O layer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: LogLevel = "info"
    file: str = Field(default="~/.local/share/reaper/reaper.log", min_length=1)
    max_size_mb: int = Field(default=100, gt=0)
    rotate_count: int = Field(default=5, ge=0)


class NotificationSettings(BaseModel):
    """``[notifications]``: desktop notifications for rules with ``notify = true``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    urgency: Literal["low", "normal", "critical"] = "normal"
    timeout_ms: int = Field(default=5000, ge=0)


class MetricsSettings(BaseModel):
    """``[metrics]``: the Prometheus endpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    http_port: int = Field(default=9090, ge=1, le=65535)
    path: str = Field(default="/metrics", pattern=r"^/")


class ScannerSettings(BaseModel):
    """``[scanner]``: how the process table is read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A one-shot scan has no previous sample to diff against, so it samples CPU for this long;
    # capped because a scan that takes seconds makes the CLI feel broken.
    cpu_sample_seconds: float = Field(default=0.2, gt=0, le=2)
    use_procfs: bool = True
    # Raise Reaper's own CPU share while it looks (nice and autogroup, where permitted): a
    # scan competes with the very loops it hunts. Off for hosts where priorities are managed.
    boost_cpu_share: bool = True


class FleetSettings(BaseModel):
    """``[fleet]``: how fleet commands (engine, worker, mission) reach Redis and sign tasks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Unset: --redis-url, else $REDIS_URL, else redis://localhost:6379/0. A URL here may hold a
    # password; prefer REDIS_URL or a file only you can read.
    redis_url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://")
    # The shared HMAC secret; $REAPER_SECRET and $REAPER_SECRET_FILE take precedence.
    secret_file: str | None = Field(default=None, min_length=1)
    key_prefix: str = Field(default="reaper", pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class HealthCheck(BaseModel):
    """``[[health_checks]]`` (seed 001): a command the daemon runs periodically."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    # An argv list, never a shell string: nothing in a config file is handed to a shell.
    command: tuple[str, ...] = Field(min_length=1)
    interval_seconds: float = Field(default=300, gt=0)
    timeout_seconds: float = Field(default=60, gt=0)

    @field_validator("command")
    @classmethod
    def _program_named(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        if not command[0].strip():
            raise ValueError("the first element (the program) must not be empty")
        return command

    @model_validator(mode="after")
    def _fits_interval(self) -> HealthCheck:
        # A check allowed to outlive its interval would pile up copies of itself.
        if self.timeout_seconds > self.interval_seconds:
            raise ValueError("timeout_seconds must not exceed interval_seconds")
        return self


class ReaperConfig(BaseModel):
    """The whole of ``reaper.toml``; ``ReaperConfig()`` is the built-in default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    scanner: ScannerSettings = Field(default_factory=ScannerSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    rules: tuple[Rule, ...] = DEFAULT_RULES
    health_checks: tuple[HealthCheck, ...] = ()

    @field_validator("rules", "health_checks")
    @classmethod
    def _unique_names(cls, entries: tuple[Rule | HealthCheck, ...]) -> tuple[Any, ...]:
        seen: set[str] = set()
        for entry in entries:
            if entry.name in seen:
                raise ValueError(f"duplicate name {entry.name!r}")
            seen.add(entry.name)
        return entries

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


def default_document() -> dict[str, Any]:
    """The defaults as a TOML-like dict (``None`` where a key is unset)."""
    return ReaperConfig().model_dump(mode="json")


# --- merging --------------------------------------------------------------------------------


class Provenance:
    """Which document supplied each part of a merged document, and where it was in it.

    Entries map a path in the merged document to ``(source index, path in that source)``. A
    value copied whole gets one entry for its subtree; a table merged key by key gets an entry
    naming the last document that touched it, so table-level errors land somewhere sensible.
    """

    def __init__(self) -> None:
        self._entries: dict[Loc, tuple[int, Loc]] = {}

    def record(self, merged: Loc, source: int, local: Loc, *, whole: bool) -> None:
        if whole:  # a replaced subtree: what earlier documents said inside it is gone
            depth = len(merged)
            for loc in [k for k in self._entries if len(k) > depth and k[:depth] == merged]:
                del self._entries[loc]
        self._entries[merged] = (source, local)

    def origin(self, loc: Loc) -> tuple[int, Loc] | None:
        """The source and source-local path of ``loc`` (deepest recorded ancestor + the rest)."""
        for depth in range(len(loc), -1, -1):
            found = self._entries.get(loc[:depth])
            if found is not None:
                source, local = found
                return source, local + loc[depth:]
        return None

    def exact_source(self, loc: Loc) -> int | None:
        found = self._entries.get(loc)
        return None if found is None else found[0]


def merge_documents(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in (see the module docstring); neither is modified."""
    merged = copy.deepcopy(dict(base))
    _merge(merged, override, (), (), 0, None)
    return merged


def compose(documents: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], Provenance]:
    """Merge ``documents`` in order (the first is normally :func:`default_document`).

    Source indexes in the returned :class:`Provenance` are positions in ``documents``.
    """
    merged: dict[str, Any] = {}
    provenance = Provenance()
    for index, document in enumerate(documents):
        _merge(merged, document, (), (), index, provenance)
    return merged, provenance


def _merge(
    target: dict[str, Any],
    override: Mapping[str, Any],
    at: Loc,
    local: Loc,
    source: int,
    provenance: Provenance | None,
) -> None:
    if provenance is not None:
        provenance.record(at, source, local, whole=False)
    for key, value in override.items():
        here, there = (*at, key), (*local, key)
        current = target.get(key)
        if key == "rules" and not at and isinstance(value, list) and isinstance(current, list):
            _merge_rules(current, value, source, provenance)
            if provenance is not None:
                provenance.record(here, source, there, whole=False)
        elif isinstance(value, Mapping) and isinstance(current, dict):
            if at[-2:-1] == ("rules",) and key == "conditions":
                for given, other in _ALTERNATIVES.items():
                    if given in value and other not in value:
                        current.pop(other, None)
            _merge(current, value, here, there, source, provenance)
        else:
            target[key] = copy.deepcopy(value)
            if provenance is not None:
                provenance.record(here, source, there, whole=True)


def _merge_rules(
    target: list[Any], rules: list[Any], source: int, provenance: Provenance | None
) -> None:
    for i, rule in enumerate(rules):
        name = rule.get("name") if isinstance(rule, Mapping) else None
        j = next(
            (
                j
                for j, existing in enumerate(target)
                if name is not None and isinstance(existing, dict) and existing.get("name") == name
            ),
            None,
        )
        if j is None:
            target.append(copy.deepcopy(rule))
            if provenance is not None:
                provenance.record(("rules", len(target) - 1), source, ("rules", i), whole=True)
        else:
            _merge(target[j], rule, ("rules", j), ("rules", i), source, provenance)


# --- what a project file may do to [safety] ------------------------------------------------

_TIGHTEN = "a project file may only tighten [safety]"
# Keys whose project-file value is added to the user-level list instead of replacing it.
UNION_KEYS = ("whitelist_processes", "whitelist_patterns")
_SCOPES = ("all", "baseline", "descendants")


def restrict_project_safety(
    project: Mapping[str, Any], effective: SafetySettings, user_set: Collection[str] = ()
) -> dict[str, Any]:
    """``project`` (a project file's document) with its ``[safety]`` held to tightening.

    ``effective`` is the safety settings of the defaults and the user-level file merged;
    ``user_set`` the ``[safety]`` keys that file sets (to word the message). Returns a copy of
    ``project`` whose whitelists are the union of ``effective``'s and the project's, to be
    merged over the user-level document. Raises :class:`DocumentError` at the first key (in the
    project file's order) that would weaken a protection:

    * ``protect_root`` may only be true;
    * ``min_pid`` may not be lower than the effective one;
    * ``scope`` may narrow ``"all"`` to ``"baseline"`` or ``"descendants"``, never change
      another value;
    * ``scope_root_pid`` may only be set when the user-level scope is ``"all"`` (any subtree
      is narrower) or to the root the user-level file already chose: with ``scope =
      "descendants"`` and no root, the user chose the reaper's own descendants.

    A value of the wrong type is left alone, for validation to report against the project file.
    """
    result = copy.deepcopy(dict(project))
    table = result.get("safety")
    if not isinstance(table, dict):
        return result

    def by(key: str) -> str:
        return "the user configuration" if key in user_set else "the built-in defaults"

    for key, value in table.items():
        problem = _weakening(key, value, effective, by)
        if problem is not None:
            raise DocumentError(("safety", key), f"{_TIGHTEN}: {problem}")
        if (
            key in UNION_KEYS
            and isinstance(value, list)
            and all(isinstance(item, str) for item in value)
        ):
            earlier: tuple[str, ...] = getattr(effective, key)
            table[key] = [*earlier, *(item for item in value if item not in earlier)]
    return result


def _weakening(
    key: str, value: Any, effective: SafetySettings, by: Callable[[str], str]
) -> str | None:
    """What is wrong with a project file setting ``[safety] key = value``, if anything."""
    if key == "protect_root" and value is False:
        return "protect_root = false is only accepted in the user configuration"
    if key == "min_pid" and _is_int(value) and value < effective.min_pid:
        return f"min_pid {value} is below {effective.min_pid} set by {by(key)}"
    if key == "scope" and value in _SCOPES and effective.scope not in ("all", value):
        wider = "is wider than" if value == "all" else "is not narrower than"
        return f"scope {value!r} {wider} {effective.scope!r} set by {by(key)}"
    # With scope = "baseline" a root pid is refused by validation (and "descendants" above).
    if key == "scope_root_pid" and _is_int(value) and effective.scope == "descendants":
        chosen = effective.scope_root_pid
        if chosen is None:
            return (
                f"scope_root_pid {value} would replace the reaper itself, the root chosen by "
                f"{by('scope')} (scope = 'descendants' without scope_root_pid)"
            )
        if value != chosen:
            return f"scope_root_pid {value} differs from {chosen} set by {by(key)}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- checks and validation ------------------------------------------------------------------


class DocumentError(Exception):
    """A defect at ``loc`` of one document (or of a merged one), before it becomes a ConfigError
    naming the file: the pure layer knows paths, the I/O layer knows files and lines."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def check_document(document: Mapping[str, Any]) -> None:
    """What must hold in each file on its own, because merging would hide or garble it.

    Raises :class:`DocumentError`: named arrays that are not arrays of tables, entries without
    a string ``name``, a name given twice in one file (merging by name would silently fold the
    second into the first), and dates/times (no key takes one).
    """
    _check_no_dates(document, ())
    for array in NAMED_ARRAYS:
        if array not in document:
            continue
        entries = document[array]
        if not isinstance(entries, list):
            raise DocumentError((array,), f"must be an array of tables ([[{array}]])")
        first_at: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise DocumentError((array, i), f"must be a table ([[{array}]])")
            name = entry.get("name")
            if name is None:
                raise DocumentError((array, i), "missing key 'name'")
            if not isinstance(name, str):
                raise DocumentError((array, i, "name"), f"must be a string (got {name!r})")
            if name in first_at:
                raise DocumentError(
                    (array, i, "name"),
                    f"duplicate name {name!r} (already used by {array}.{first_at[name]})",
                )
            first_at[name] = i


def _check_no_dates(value: Any, at: Loc) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_no_dates(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_no_dates(item, (*at, i))
    elif not isinstance(value, str | int | float | bool):  # TOML's dates and times
        raise DocumentError(at, f"a date or time is not valid here (got {value!s})")


def validate_document(
    document: Mapping[str, Any], provenance: Provenance | None = None
) -> ReaperConfig:
    """Build the config from a merged document; :class:`DocumentError` names the first defect.

    Validation is strict, through JSON: TOML has real types, so ``"60"`` for a number or
    ``"false"`` for a boolean is a mistake to report, not to coerce.
    """
    try:
        text = json.dumps(document)
        return ReaperConfig.model_validate_json(text, strict=True)
    except ValidationError as err:
        raise issue_of(err, document, provenance) from err


def issue_of(
    err: ValidationError, document: Mapping[str, Any], provenance: Provenance | None = None
) -> DocumentError:
    """The first error of ``err`` as a path and a message fit for people."""
    first = err.errors()[0]
    loc: Loc = tuple(first.get("loc", ()))
    kind = first.get("type")
    message = str(first["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        removed = _REMOVED.get(loc)
        message = "unknown key" + (f" ({removed})" if removed else _suggestion(loc))
    elif loc in _ALWAYS_TRUE and "input" in first:
        message = f"cannot be turned off: {_ALWAYS_TRUE[loc]} (got {_shown(first['input'])})"
    elif kind == "missing":
        message = "missing key"
    elif kind == "value_error":
        loc = _blamed_key(loc, message, document, provenance)
    elif "input" in first and not isinstance(first["input"], dict | list):
        message = f"{message} (got {_shown(first['input'])})"
    more = err.error_count() - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return DocumentError(loc, message)


def _shown(value: Any) -> str:
    """A value as the user wrote it in TOML (``true``, not Python's ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _blamed_key(
    loc: Loc, message: str, document: Mapping[str, Any], provenance: Provenance | None
) -> Loc:
    """A table-level check ("scope_root_pid only applies with scope = ...") is about keys of
    that table: blame the one the message names that was set last (first named on a tie)."""
    candidates = _mentioned_keys(loc, message, document)
    if not candidates:
        return loc
    if provenance is None:
        return candidates[0]
    return max(candidates, key=lambda c: (provenance.exact_source(c) or 0, -candidates.index(c)))


def _mentioned_keys(loc: Loc, message: str, document: Mapping[str, Any]) -> list[Loc]:
    table = _at(document, loc)
    if not isinstance(table, Mapping):
        return []
    words = dict.fromkeys(re.findall(r"[a-z][a-z0-9_]*", message))
    return [(*loc, w) for w in words if w in table and table[w] is not None]


def _at(document: Any, loc: Loc) -> Any:
    node = document
    for part in loc:
        in_table = isinstance(part, str) and isinstance(node, Mapping) and part in node
        in_array = isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node)
        if not (in_table or in_array):
            return None
        node = node[part]
    return node


def _suggestion(loc: Loc) -> str:
    model = _model_at(loc[:-1])
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model that validates the table at ``loc``, to suggest a key for a typo."""
    model: type[BaseModel] = ReaperConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        found = _submodel(field.annotation)
        if found is None:
            return None
        model = found
    return model


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
