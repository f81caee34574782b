"""Reading inventory files (TOML; see examples/lab.toml and docs/inventory.md)."""

from __future__ import annotations

from pathlib import Path

from reaper_engine.errors import ConfigError
from reaper_engine.models import HostSpec, Inventory
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


def pin_table_paths(inventory: Inventory, inventory_path: str | Path) -> Inventory:
    """Simulated hosts' ``process_table`` paths made absolute against the inventory's folder.

    A mission outlives the command that created it: workers started elsewhere read the task's
    host spec, so a path relative to the inventory file would mean nothing to them. Built-in
    table names (no ``/``, no ``.toml``) are left as they are.
    """
    base = Path(inventory_path).resolve().parent
    hosts = []
    for host in inventory.hosts:
        ref = host.options.get("process_table")
        if isinstance(ref, str) and ("/" in ref or ref.endswith(".toml")):
            pinned = Path(ref) if Path(ref).is_absolute() else base / ref
            options = {**host.options, "process_table": str(pinned)}
            # Validated, not model_copy(update=...): options must come back read-only.
            hosts.append(HostSpec.model_validate({**host.model_dump(), "options": options}))
        else:
            hosts.append(host)
    return inventory.model_copy(update={"hosts": tuple(hosts)})
