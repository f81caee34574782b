"""Parse TOML documents into models with errors that name the file, the line and the key."""

from __future__ import annotations

import re
import tomllib
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from reaper_engine.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

_AT_LINE = re.compile(r"\(at line (\d+), column \d+\)")


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        match = _AT_LINE.search(message)
        line = int(match.group(1)) if match else None
        raise ConfigError(_AT_LINE.sub("", message).strip(), source=source, line=line) from err


def load_model(model_type: type[M], text: str, source: str) -> M:
    """Parse ``text`` as TOML and validate it as ``model_type``; ConfigError on any defect."""
    data = parse_toml(text, source)
    try:
        return model_type.model_validate(data)
    except ValidationError as err:
        raise config_error(err, source, text) from err


def config_error(err: ValidationError, source: str, text: str) -> ConfigError:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    key = ".".join(str(p) for p in loc) or None
    message = first["msg"]
    if first.get("type") == "extra_forbidden":
        message = "unknown key"
    elif (
        "input" in first
        and first.get("type") != "missing"
        and not isinstance(first["input"], dict | list)
    ):
        message = f"{message} (got {first['input']!r})"
    more = err.error_count() - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(message, source=source, key=key, line=locate(text, loc))


def locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of the key at ``loc`` (``("hosts", 2, "os")``) in ``text``."""
    lines = text.splitlines()
    start = 0
    table: list[str] = []
    line_no: int | None = None
    i = 0
    while i < len(loc):
        part = loc[i]
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if isinstance(part, str) and isinstance(nxt, int):
            table.append(part)
            header = re.compile(r"^\s*\[\[\s*" + re.escape(".".join(table)) + r"\s*\]\]")
            hits = [n for n, line in enumerate(lines) if n >= start and header.match(line)]
            if nxt < len(hits):
                start = hits[nxt]
                line_no = start + 1
            i += 2
            continue
        if isinstance(part, str):
            key_line = re.compile(r"^\s*" + re.escape(part) + r"\s*=")
            header = re.compile(r"^\s*\[\s*(" + re.escape(".".join([*table, part])) + r")\s*\]")
            for n in range(start, len(lines)):
                if key_line.match(lines[n]) or header.match(lines[n]):
                    start = n
                    line_no = n + 1
                    break
            table.append(part)
        i += 1
    return line_no
