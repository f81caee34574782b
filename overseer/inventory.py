"""Reading inventory files (TOML; see examples/lab.toml and docs/inventory.md)."""

from __future__ import annotations

from pathlib import Path

from reaper_engine.errors import ConfigError
from reaper_engine.models import Inventory
from reaper_engine.models.inventory import parse_inventory


def load_inventory(path: str | Path) -> Inventory:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"inventory is not UTF-8 text: {err.reason} at byte offset {err.start}",
            source=str(path),
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read inventory: {err.strerror}", source=str(path)) from err
    return parse_inventory(text, str(path))
