"""Printing for the command line: Rich on a terminal, plain text everywhere else.

On a terminal, lines go through a Rich console (colour, unless ``NO_COLOR`` is set — Rich
honours it — and the seed's emoji markers). When stdout is a pipe or a file, output is plain
text without colour codes or emoji, so scripts and ``grep`` see stable words; ``--json``
output is always plain JSON. Rich is imported only when something is printed to a terminal.
"""

from __future__ import annotations

import json
import re
import sys
from typing import IO, TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

_ICONS = {
    "critical": "🚨",
    "high": "⚠ ",
    "medium": "⚠ ",
    "low": "\u2139 ",  # information source
    "ok": "✅",
    "bad": "❌",
    "warn": "⚠ ",
    "stats": "📊",
    "off": "⏸ ",
}

PRIORITY_STYLE = {
    "critical": "bold red",
    "high": "yellow",
    "medium": "magenta",
    "low": "cyan",
}


class Output:
    """One output stream (stdout, or stderr for prompts and notes)."""

    def __init__(self, *, err: bool = False, stream: IO[str] | None = None) -> None:
        self.err = err
        self._stream = stream
        target = stream or (sys.stderr if err else sys.stdout)
        self.fancy = _isatty(target)
        self._console: Console | None = None

    def icon(self, name: str) -> str:
        """The emoji marker and a space on a terminal; nothing in plain output."""
        return f"{_ICONS[name]} " if self.fancy else ""

    def line(self, text: str = "", style: str | None = None) -> None:
        text = printable(text)
        if not self.fancy:
            click.echo(text, err=self.err, file=self._stream)
            return
        from rich.text import Text

        # A Text object, never markup: command lines contain brackets.
        self.console.print(Text(text, style=style or ""))

    def json(self, document: Any) -> None:
        click.echo(json.dumps(document, indent=2, sort_keys=False), file=self._stream)

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=self._stream, stderr=self.err, highlight=False, soft_wrap=True
            )
        return self._console


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``), never sent raw.

    Command lines are written by whoever started the process, other users included; raw, an
    escape sequence could retitle the terminal, clear it, or overwrite a line to fake output.
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or a stand-in without isatty
        return False


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in ``...`` when cut."""
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def short_command(command: str, name: str = "") -> str:
    """The command line with its program as a base name (``/tmp/x/test_y --a`` → ``test_y --a``):
    the program's directory says little and costs the most columns."""
    if not command:
        return name
    program, _, rest = command.partition(" ")
    base = program.rsplit("/", 1)[-1] or program
    return f"{base} {rest}".strip()


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 process``, ``2 processes``."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def percent(value: float) -> str:
    """``399%``, ``12.5%``: no trailing ``.0``."""
    return f"{value:.1f}".removesuffix(".0") + "%"


def finding_row(pid: int, command: str, cpu: float, age: str, rule: str, *, width: int = 28) -> str:
    """One process as seed 000's ``reaper scan`` shows it."""
    shown = truncate(command, width)
    return f"  PID {pid:<8} {shown:<{width}} CPU {cpu:4.1f}%  Age {age:<7}  Rule: {rule}"
