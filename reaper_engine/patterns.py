"""Regex lists in configuration: validated when loaded, so a bad pattern names itself."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator


def _compilable(patterns: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"invalid regex {pattern!r}: {err}") from None
    return patterns


Regexes = Annotated[tuple[str, ...], AfterValidator(_compilable)]
"""A tuple of regular expressions, each of which must compile."""
