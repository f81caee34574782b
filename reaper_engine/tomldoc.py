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
    """Parse ``text``; a syntax error is a ConfigError naming ``source`` and the line."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: `a = [[[[...` thousands
        # deep exhausts the stack. No configuration nests like that; say so, no traceback.
        raise ConfigError(
            "nesting too deep (arrays or inline tables inside each other)", source=source
        ) from None
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
    """Best-effort line number of the key at ``loc`` (``("hosts", 2, "os")``) in ``text``.

    Narrows a region of lines table by table; a key missing from its table points at the
    table's header.
    """
    lines = text.splitlines()
    start, end = 0, len(lines)  # the region: [start, end)
    found: int | None = None
    path: list[str] = []
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if not isinstance(part, str):
            break
        path.append(part)
        dotted = re.escape(".".join(path))
        if parts and isinstance(parts[0], int):  # an array of tables: [[path]] number n
            n = parts.pop(0)
            headers = _matching(lines, rf"^\s*\[\[\s*{dotted}\s*\]\]", start, end)
            if n >= len(headers):
                break
            start, end = headers[n], _block_end(lines, headers[n], end)
            found = start + 1
            continue
        keys = _matching(lines, rf"^\s*{re.escape(part)}\s*=", start + (found is not None), end)
        keys = [k for k in keys if k < _block_end(lines, start, end)] if found else keys
        if keys:
            return keys[0] + 1
        tables = _matching(lines, rf"^\s*\[\s*{dotted}\s*\]", start, len(lines))
        if not tables:
            break
        start, end = tables[0], _block_end(lines, tables[0], len(lines))
        found = start + 1
    return found


def _matching(lines: list[str], pattern: str, start: int, end: int) -> list[int]:
    regex = re.compile(pattern)
    return [n for n in range(start, end) if regex.match(lines[n])]


def _block_end(lines: list[str], header: int, end: int) -> int:
    """The line after the last one belonging to the table whose header is at ``header``."""
    for n in range(header + 1, end):
        if lines[n].lstrip().startswith("["):
            return n
    return end
