"""``reaper config validate | init | show``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from overseer.cli.common import (
    EXIT_USAGE,
    config_option,
    environment,
    fail,
    load,
    setup_logging,
)
from overseer.cli.output import Output, plural

if TYPE_CHECKING:
    from infra.config_files import LoadedConfig
    from reaper_engine.config import ReaperConfig

DEFAULTS = "<built-in defaults>"


@click.group("config")
def config() -> None:
    """Check, create and show the configuration."""


@config.command("validate")
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@config_option
@click.pass_context
def validate(ctx: click.Context, path: Path | None, config_path: Path | None) -> None:
    """Check the configuration (PATH, else --config / $REAPER_CONFIG / the user file),
    merged with the defaults and the nearest .reaper.toml, as every command would load it.

    An error is one line naming the file, the line and the key; the exit code is then 2.
    """
    if path is not None and config_path is not None and path != config_path:
        raise click.UsageError("give the file either as PATH or with --config, not both")
    setup_logging(ctx)
    loaded = load(path or config_path)
    out = Output()
    ok = out.icon("ok")
    if loaded.user_file is not None:
        out.line(f"{ok}Configuration valid: {loaded.user_file}", "green")
    else:
        from infra.config_files import user_config_path

        where = user_config_path(environment())
        out.line(f"{ok}Configuration valid: built-in defaults (no file at {where})", "green")
    for project in _project_files(loaded):
        out.line(f"{ok}Project override found: {project}", "green")
    rules = loaded.config.rules
    enabled = sum(1 for r in rules if r.enabled)
    out.line(f"{ok}All {plural(len(rules), 'rule')} have valid syntax ({enabled} enabled)", "green")
    conflicts = shadowed_rules(loaded.config)
    if conflicts:
        for text in conflicts:
            out.line(f"{out.icon('warn')}{text}", "yellow")
    else:
        out.line(f"{ok}No conflicts detected", "green")


@config.command("init")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@config_option
@click.pass_context
def init(ctx: click.Context, force: bool, config_path: Path | None) -> None:
    """Write the commented default configuration (to --config / $REAPER_CONFIG if given,
    else ~/.config/reaper/reaper.toml); never overwrites unless --force."""
    setup_logging(ctx)
    from infra.config_files import ENV_CONFIG, user_config_path, write_default_config
    from reaper_engine.errors import ConfigError

    env = environment()
    if config_path is not None:
        target = config_path.expanduser()
    elif env.get(ENV_CONFIG):
        target = Path(env[ENV_CONFIG]).expanduser()
    else:
        target = user_config_path(env)
    try:
        written = write_default_config(target.absolute(), force=force)
    except ConfigError as err:
        fail(str(err), EXIT_USAGE)
    out = Output()
    out.line(f"{out.icon('ok')}Wrote the default configuration to {written}", "green")
    out.line(f"Edit it, then check it with: reaper config validate {written}")


@config.command("show")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["toml", "json"]),
    default="toml",
    show_default=True,
    help="Output format.",
)
@config_option
@click.pass_context
def show(ctx: click.Context, fmt: str, config_path: Path | None) -> None:
    """Print the effective configuration (defaults merged with your files) and its sources."""
    setup_logging(ctx)
    loaded = load(config_path)
    sources = [DEFAULTS, *(str(p) for p in loaded.sources)]
    document = loaded.config.model_dump(mode="json")
    if fmt == "json":
        Output().json({"sources": sources, "config": document})
        return
    header = ["# Effective Reaper configuration, merged in this order:"]
    header.extend(f"#   {i}. {source}" for i, source in enumerate(sources, 1))
    click.echo("\n".join(header) + "\n\n" + to_toml(document), nl=False)


def _project_files(loaded: LoadedConfig) -> list[Path]:
    return [p for p in loaded.sources if p != loaded.user_file]


def shadowed_rules(config: ReaperConfig) -> list[str]:
    """Enabled rules that can never select anything: an earlier-evaluated enabled rule has
    exactly the same conditions, and the first matching rule decides."""
    from reaper_engine.detector import Detector

    ordered = Detector(config.rules).rules
    found = []
    for index, rule in enumerate(ordered):
        earlier = next((r for r in ordered[:index] if r.conditions == rule.conditions), None)
        if earlier is not None:
            found.append(
                f"rule '{rule.name}' never applies: '{earlier.name}' has the same conditions "
                "and is evaluated first"
            )
    return found


# --- a small TOML writer for the effective configuration ------------------------------------
# The dump of a ReaperConfig is flat tables, arrays of tables one level deep, scalars and
# lists of scalars; that is all this writes. Unset values (None) are TOML-less: they are
# shown as comments, except a rule's fallback_signal, whose "no fallback" is spelled "none".


def to_toml(document: dict[str, Any]) -> str:
    parts: list[str] = []
    for key, value in document.items():
        if isinstance(value, dict):
            parts.append(_table(f"[{key}]", value))
    for key, value in document.items():
        if not isinstance(value, list):
            continue
        if not value:
            parts.append(f"# {key}: none\n")
        for entry in value:
            parts.append(_table(f"[[{key}]]", entry, prefix=key))
    return "\n".join(parts)


def _table(header: str, table: dict[str, Any], prefix: str | None = None) -> str:
    lines = [header]
    nested: list[str] = []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append(_table(f"[{prefix}.{key}]", value))
        elif value is None:
            if key == "fallback_signal":
                lines.append(f'{key} = "none"')
            else:
                lines.append(f"# {key}: unset")
        else:
            lines.append(f"{key} = {_value(value)}")
    return "\n".join(lines) + "\n" + "".join(f"\n{n}" for n in nested)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML spelling for {value!r}")  # pragma: no cover - flat models


def _string(text: str) -> str:
    # Regexes read best as literal strings (no doubled backslashes) when TOML allows one.
    literal_ok = "'" not in text and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    if "\\" in text and literal_ok:
        return f"'{text}'"
    # JSON's escapes (\" \\ \n \uXXXX ...) are all valid in a TOML basic string.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def register(group: click.Group) -> None:
    group.add_command(config)
