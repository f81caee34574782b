"""Process-table fixtures for simulated hosts (TOML; built-in ones ship in ``tables/``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from reaper_engine.errors import ConfigError
from reaper_engine.models import ProcessState
from reaper_engine.tomldoc import load_model


class SimProcess(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: int = Field(ge=0)
    ppid: int = Field(default=1, ge=0)
    user: str
    uid: int | None = None
    name: str
    cmdline: tuple[str, ...] = ()
    age_seconds: float = Field(ge=0)
    cpu_percent: float = Field(default=0.0, ge=0)
    cpu_time_seconds: float | None = Field(default=None, ge=0)  # default: age * cpu%
    rss_mb: float = Field(default=10.0, ge=0)
    status: ProcessState = ProcessState.SLEEPING
    kernel_thread: bool = False
    ignores_sigterm: bool = False  # needs the fallback signal
    note: str = ""  # why it is in the table (e.g. "must survive: editor")


class ProcessTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    hostname: str | None = None
    os_version: str = ""
    cpu_count: int = Field(default=4, ge=1)
    processes: tuple[SimProcess, ...] = Field(alias="process")


def load_table(ref: str, base_dir: Path | None = None) -> ProcessTable:
    """Load a table by built-in name (``linux-incident``) or by path (relative to ``base_dir``)."""
    if ref.endswith(".toml"):
        path = Path(ref) if base_dir is None else base_dir / ref
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read process table: {err.strerror}", source=source) from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"not UTF-8 (byte {err.start})", source=source) from None
    else:
        source = f"builtin:{ref}"
        resource = resources.files("agents.simulation") / "tables" / f"{ref}.toml"
        if not resource.is_file():
            raise ConfigError(f"no built-in process table named '{ref}'", source=source)
        text = resource.read_text(encoding="utf-8")
    return load_model(ProcessTable, text, source)
