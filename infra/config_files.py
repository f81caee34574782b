"""Finding, reading, merging and writing ``reaper.toml`` files.

Precedence, lowest first: the built-in defaults, the user file (``$XDG_CONFIG_HOME/reaper/
reaper.toml``, or ``~/.config/...``) — replaced by an explicit ``--config`` path or
``$REAPER_CONFIG`` — then the first ``.reaper.toml`` found from the working directory upward.

The project file may only tighten ``[safety]`` (see
:func:`reaper_engine.config.restrict_project_safety`): it can sit in any repository someone
cloned, so relaxing a protection is reserved to the user-level file.

Every defect is a :class:`ConfigError` naming the file, the key and (where it can be found)
the line; a merged document remembers which file supplied each value, so an error found only
after merging still points into the file that caused it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reaper_engine.config import (
    NO_SIGNAL,
    DocumentError,
    Loc,
    Provenance,
    ReaperConfig,
    check_document,
    compose,
    default_document,
    restrict_project_safety,
    validate_document,
)
from reaper_engine.errors import ConfigError
from reaper_engine.rules import Rule
from reaper_engine.tomldoc import locate, parse_toml

PROJECT_FILE_NAME = ".reaper.toml"
ENV_CONFIG = "REAPER_CONFIG"
_DEFAULTS_SOURCE = "<built-in defaults>"


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: ReaperConfig
    sources: tuple[Path, ...]
    """The files actually used, in merge order (user or explicit file, then project file)."""
    user_file: Path | None
    """The user-level file used (the explicit one if given), for the audit log's config_file."""


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path
    text: str
    document: dict[str, Any]


# --- locations ------------------------------------------------------------------------------


def user_config_path(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/reaper/reaper.toml``, else ``$HOME/.config/reaper/reaper.toml``."""
    xdg = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says relative values are invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else _home(env) / ".config"
    return base / "reaper" / "reaper.toml"


def find_project_config(start: Path) -> Path | None:
    """The nearest ``.reaper.toml`` in ``start`` or one of its parents, if any."""
    here = start.absolute()
    for directory in (here, *here.parents):
        candidate = directory / PROJECT_FILE_NAME
        # A directory we may not search cannot hold a file of ours we could read: go on up.
        if _is_file(candidate, strict=False):
            return candidate
    return None


def _is_file(path: Path, *, strict: bool = True) -> bool:
    """``path.is_file()``, but an unreadable location is a ConfigError (strict) or absent."""
    try:
        return path.is_file()
    except OSError as err:
        if not strict:
            return False
        raise ConfigError(f"cannot read: {err.strerror}", source=str(path)) from None


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def _expand(raw: str, *, cwd: Path, env: Mapping[str, str]) -> Path:
    """``~`` from the given environment (not the process's), relative to ``cwd``."""
    path = _home(env) / raw[2:] if raw == "~" or raw.startswith("~/") else Path(raw)
    return path if path.is_absolute() else cwd / path


# --- loading --------------------------------------------------------------------------------


def load_config(*, explicit: Path | None = None, cwd: Path, env: Mapping[str, str]) -> LoadedConfig:
    """Defaults, then the user (or explicit) file, then the project file; ConfigError if invalid.

    An explicit path (``--config``, else ``$REAPER_CONFIG``) must exist: someone asked for that
    file, and silently running on defaults instead would be a surprise. The user and project
    files are optional.
    """
    named_by = ""
    if explicit is None and env.get(ENV_CONFIG):
        explicit = _expand(env[ENV_CONFIG], cwd=cwd, env=env)
        named_by = f" (named by ${ENV_CONFIG})"  # else a user wonders where it came from
    elif explicit is not None:
        explicit = _expand(str(explicit), cwd=cwd, env=env)

    if explicit is not None:
        if not _is_file(explicit):
            reason = "is not a file" if explicit.exists() else "no such file"
            raise ConfigError(reason + named_by, source=str(explicit))
        user_file: Path | None = explicit
    else:
        candidate = user_config_path(env)
        user_file = candidate if _is_file(candidate) else None

    project_file = find_project_config(cwd)
    if project_file is not None and user_file is not None and _same_file(user_file, project_file):
        project_file = None  # --config pointing at the project file: apply it once, as chosen
    sources = [_read(path) for path in (user_file,) if path is not None]
    documents = [default_document(), *(s.document for s in sources)]
    if project_file is not None:
        project = _read(project_file)
        documents.append(_tightened(project, documents, sources))
        sources.append(project)

    merged, provenance = compose(documents)
    config = _validated(merged, provenance, sources)
    paths = tuple(s.path for s in sources)
    return LoadedConfig(config=config, sources=paths, user_file=user_file)


def _tightened(
    project: _Source, documents: list[dict[str, Any]], earlier: list[_Source]
) -> dict[str, Any]:
    """The project document, checked to only tighten the user-level ``[safety]`` (whose
    whitelists it extends): ConfigError naming the project file, the line and the key."""
    base, provenance = compose(documents)
    # The user-level safety settings must be valid on their own: they are the floor the
    # project file is held to, so it cannot be the one to repair them.
    effective = _validated({"safety": base.get("safety")}, provenance, earlier).safety
    user_doc = earlier[0].document if earlier else {}
    user_safety = user_doc.get("safety")
    user_set = tuple(user_safety) if isinstance(user_safety, Mapping) else ()
    try:
        return restrict_project_safety(project.document, effective, user_set)
    except DocumentError as issue:
        raise _error_in(project, issue.loc, issue.message) from None


def _validated(
    document: dict[str, Any], provenance: Provenance, sources: list[_Source]
) -> ReaperConfig:
    """Validate a composed document; an error names the file that supplied the bad value."""
    try:
        return validate_document(document, provenance)
    except DocumentError as issue:
        origin = provenance.origin(issue.loc)
        if origin is None or origin[0] == 0:
            # Defaults are tested to be valid; reaching this means a bug, still no traceback.
            raise ConfigError(
                issue.message, source=_DEFAULTS_SOURCE, key=_dotted(issue.loc)
            ) from None
        raise _error_in(sources[origin[0] - 1], origin[1], issue.message) from None


def _read(path: Path) -> _Source:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"not UTF-8 text: {err.reason} at byte offset {err.start}", source=str(path)
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", source=str(path)) from None
    document = parse_toml(text, str(path))
    source = _Source(path=path, text=text, document=document)
    try:
        check_document(document)
    except DocumentError as issue:
        raise _error_in(source, issue.loc, issue.message) from None
    return source


def _error_in(source: _Source, loc: Loc, message: str) -> ConfigError:
    return ConfigError(
        message,
        source=str(source.path),
        key=_dotted(loc),
        line=locate(source.text, _locatable(source.document, loc)),
    )


def _locatable(document: Any, loc: Loc) -> Loc:
    """``loc`` cut where it enters an inline array of values (``states.1``): ``locate`` finds
    the line of a key or a ``[[table]]``, not of an element on a line."""
    node = document
    for depth, part in enumerate(loc):
        if isinstance(part, int):
            if not (isinstance(node, list) and 0 <= part < len(node)):
                return loc[:depth]
            if not isinstance(node[part], dict):
                return loc[:depth]
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return loc[: depth + 1]
    return loc


def _dotted(loc: Loc) -> str | None:
    return ".".join(str(p) for p in loc) or None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


# --- the default file -----------------------------------------------------------------------

_HEADER = """\
# Reaper configuration.
#
# Where Reaper looks, lowest precedence first:
#   1. built-in defaults (exactly what this file says);
#   2. $XDG_CONFIG_HOME/reaper/reaper.toml (default ~/.config/reaper/reaper.toml), or the file
#      named by --config or $REAPER_CONFIG instead;
#   3. the nearest .reaper.toml in the working directory or one of its parents.
# Tables merge key by key; [[rules]] merge by name (a later file can change one condition of a
# rule, or disable it with enabled = false); any other list replaces the earlier one.
# A project .reaper.toml may only tighten [safety]: raise min_pid, narrow scope, add to the
# whitelists (there its lists are added, not replaced). Only the user file (or --config /
# $REAPER_CONFIG) may relax a protection.
# Every key below shows its default; delete what you do not want to change.
"""

# One line per key: what it means (the default is on the line below it in the file).
_HELP: dict[str, dict[str, str]] = {
    "daemon": {
        "enabled": "Run periodic scans when started as a daemon (reaper start).",
        "scan_interval_seconds": "Seconds between two scans (> 0).",
        "dry_run": "Detect and log, never signal anything (also: reaper start --dry-run).",
        "pid_file": (
            "PID file that stops a second daemon from starting "
            "(unset: $XDG_RUNTIME_DIR/reaper/reaper.pid, else $XDG_STATE_HOME/reaper/reaper.pid)."
        ),
    },
    "logging": {
        "level": "Least severe level of the daemon's own log: debug | info | warning | error.",
        "file": "The audit log (JSON lines); ~ and $XDG_DATA_HOME are expanded.",
        "max_size_mb": "Rotate the log when it reaches this many MiB (> 0).",
        "rotate_count": "Rotated files to keep (0: truncate instead of keeping any).",
    },
    "notifications": {
        "enabled": "Desktop notifications for rules with notify = true.",
        "urgency": "Notification urgency: low | normal | critical.",
        "timeout_ms": "How long a notification stays up, in ms (0: until dismissed).",
    },
    "metrics": {
        "enabled": "Serve Prometheus metrics while the daemon runs.",
        "http_port": "Port of the metrics endpoint (1-65535).",
        "path": "URL path of the metrics endpoint (starts with /).",
    },
    "safety": {
        "whitelist_processes": "Never signal these (names, case-insensitive, .exe ignored).",
        "whitelist_patterns": "Never signal processes whose command line matches a regex here.",
        "min_pid": "Never signal a PID below this.",
        "protect_root": "Never signal processes of root / Windows system accounts.",
        "protect_shell_ancestors": "Always true: never signal the shells etc. above the reaper.",
        "scope": "Which processes may be touched: all | baseline | descendants.",
        "scope_root_pid": "With scope = descendants: the root (unset: the reaper itself).",
    },
    "scanner": {
        "cpu_sample_seconds": "CPU sampling window of a one-shot scan, seconds (0 < x <= 2).",
        "use_procfs": "On Linux, read /proc directly (faster) instead of through psutil.",
        "boost_cpu_share": "Raise Reaper's CPU share (nice, autogroup) while it scans.",
    },
    "fleet": {
        "redis_url": (
            "Redis of fleet mode (--redis-url and $REDIS_URL win; unset: redis://localhost:6379/0)."
        ),
        "secret_file": (
            "File holding the task-signing secret "
            "(--secret-file, $REAPER_SECRET and $REAPER_SECRET_FILE win)."
        ),
        "key_prefix": "Prefix of every Redis key Reaper writes (several fleets, one Redis).",
    },
    "health_checks": {
        "name": "Unique name (lowercase letters, digits, _).",
        "command": "Program and arguments (an argv list; no shell).",
        "interval_seconds": "Seconds between two runs (> 0).",
        "timeout_seconds": "Kill the check after this many seconds (<= interval_seconds).",
    },
    "rules": {
        "name": "Unique name (lowercase letters, digits, _); later files merge by it.",
        "enabled": "false disables the rule.",
        "priority": "critical | high | medium | low: evaluation order, most urgent first.",
        "description": "Shown in reports and the audit log.",
    },
    "rules.conditions": {
        "cpu_percent_min": "CPU% at least this (busy processes).",
        "cpu_percent_max": "CPU% at most this (idle, hung processes).",
        "duration_seconds": "Window in seconds over which cpu_percent_min must hold (needs it).",
        "lifetime_cpu_percent_min": "Average CPU% since it started (cpu time / age) at least this.",
        "lifetime_cpu_percent_max": "Average CPU% since it started (cpu time / age) at most this.",
        "age_seconds": "Older than this, in seconds (or age_hours, not both).",
        "age_hours": "Older than this, in hours (or age_seconds, not both).",
        "memory_mb_min": "Resident memory at least this many MiB.",
        "memory_mb_max": "Resident memory at most this many MiB.",
        "idle_seconds": "No CPU progress for at least this many seconds (needs scan history).",
        "command_patterns": "The command line matches one of these regexes.",
        "exclude_patterns": "...and none of these.",
        "exclude_presets": "...nor is one of Reaper's built-in sets: compilers (and build "
        "tools), browsers, editors, ides.",
        "states": "Process state is one of these (running, sleeping, stopped, zombie, ...).",
        "users": "Owned by one of these users.",
    },
    "rules.action": {
        "type": "kill, or report (list the process, never signal it).",
        "signal": "First signal: SIGTERM | SIGKILL | SIGINT | SIGHUP | SIGQUIT.",
        "timeout_seconds": "Seconds to wait for it to exit before the fallback signal.",
        "fallback_signal": 'Signal if still alive after the timeout ("none": no fallback).',
        "notify": "Send a desktop notification when it fires.",
        "log_level": "Level of its kill_decision log event: debug | info | warning | error.",
        "scope": "What to signal: process | group (its process group) | tree (+ descendants).",
    },
}

_SECTIONS = ("daemon", "logging", "notifications", "metrics", "safety", "scanner", "fleet")

_EXAMPLES: dict[str, str] = {
    "daemon.pid_file": '"~/.local/state/reaper/reaper.pid"',
    "safety.scope_root_pid": "4242",
    "fleet.redis_url": '"redis://redis.lab.example:6379/0"',
    "fleet.secret_file": '"/etc/reaper/secret"',
}

_HEALTH_CHECK_EXAMPLE = """\
# [[health_checks]]  (seed 001: run a command periodically; none by default)
# {name}
# name = "unit_tests"
# {command}
# command = ["npm", "test", "--", "--run"]
# {interval_seconds}
# interval_seconds = 300
# {timeout_seconds}
# timeout_seconds = 60
"""


def default_config_text() -> str:
    """The commented default ``reaper.toml``: parsing it gives exactly ``ReaperConfig()``."""
    defaults = ReaperConfig()
    parts = [_HEADER]
    for section in _SECTIONS:
        settings = getattr(defaults, section)
        parts.append(_table(f"[{section}]", section, settings, section))
    help_ = _HELP["health_checks"]
    parts.append(_HEALTH_CHECK_EXAMPLE.format(**{k: f"# {v}" for k, v in help_.items()}))
    parts.append(_rules_preamble())
    parts.extend(_rule_text(rule) for rule in defaults.rules)
    return "\n".join(parts)


def write_default_config(path: Path, *, force: bool = False) -> Path:
    """Write :func:`default_config_text` to ``path``; never overwrites unless ``force``."""
    if path.exists() and not force:
        raise ConfigError("already exists (use --force to overwrite)", source=str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a sibling and rename: an interrupted write never leaves half a config behind.
        import tempfile  # noqa: PLC0415 - only writers need it, not every scan

        fd, tmp = tempfile.mkstemp(prefix=".reaper-", suffix=".toml", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(default_config_text())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise ConfigError(f"cannot write: {err.strerror or err}", source=str(path)) from None
    return path


def _table(header: str, help_key: str, model: BaseModel, example_key: str) -> str:
    lines = [header]
    for key, value in _fields(model):
        lines.append(f"# {_HELP[help_key][key]}")
        if value is None:  # unset by default: TOML has no null, show an example commented out
            lines.append(f"# {key} = {_EXAMPLES[f'{example_key}.{key}']}")
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _rules_preamble() -> str:
    lines = [
        "# Detection rules. A process matches a rule when every condition that is set holds.",
        "# Keys of a rule:",
    ]
    for group in ("rules", "rules.conditions", "rules.action"):
        if group != "rules":
            lines.append(f"#   [{group}]")
        lines.extend(f"#   {key}: {text}" for key, text in _HELP[group].items())
    return "\n".join(lines) + "\n"


def _rule_text(rule: Rule) -> str:
    lines = ["[[rules]]"]
    lines.extend(f"{key} = {_value(value)}" for key, value in _fields(rule, nested=False))
    for table in ("conditions", "action"):
        lines.append(f"\n[rules.{table}]")
        for key, value in _fields(getattr(rule, table)):
            if value is None:
                if table == "action":  # fallback_signal: "none" is how TOML says no fallback
                    lines.append(f'{key} = "{NO_SIGNAL}"')
                continue  # an unset condition: not written, it does not constrain
            if value in ((), []) and table == "conditions":
                continue
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _fields(model: BaseModel, *, nested: bool = True) -> Iterator[tuple[str, Any]]:
    dumped = model.model_dump(mode="json")
    for key in type(model).model_fields:
        value = dumped[key]
        if nested or not isinstance(value, dict):
            yield key, value


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [_value(v) for v in value]
        one_line = f"[{', '.join(items)}]"
        if len(one_line) <= 80:
            return one_line
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    raise TypeError(f"no TOML spelling for {value!r}")  # pragma: no cover - models are flat


def _string(text: str) -> str:
    """A basic string, or a literal one for regexes so their backslashes are not doubled."""
    plain = not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    if plain and "\\" not in text and '"' not in text:
        return f'"{text}"'
    if plain and "'" not in text:
        return f"'{text}'"
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            escaped.append(f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'
