"""The fleet inventory: which hosts exist and how to reach them."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reaper_engine.models.enums import OS, AgentType, TransportKind
from reaper_engine.models.frozen import FrozenDict, FrozenJSON
from reaper_engine.tomldoc import load_model

_HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class HostSpec(BaseModel):
    """One host of the inventory. Secrets are never stored here: name a key file or env var."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_id: str
    os: OS
    transport: TransportKind = TransportKind.SIMULATED
    address: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    max_failures: int = Field(default=3, ge=1, le=100)
    dry_run: bool = False  # always rehearse on this host, whatever the mission says
    tags: tuple[str, ...] = ()
    options: FrozenJSON = Field(default_factory=FrozenDict)

    @field_validator("host_id")
    @classmethod
    def _host_id_shape(cls, value: str) -> str:
        if not _HOST_ID.match(value):
            raise ValueError(
                "must be 1-63 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _remote_needs_address(self) -> HostSpec:
        if self.transport in (TransportKind.SSH, TransportKind.WINRM) and not self.address:
            raise ValueError(f"transport '{self.transport}' needs an address")
        return self

    @property
    def agent_type(self) -> AgentType:
        return self.os.agent_type


class Inventory(BaseModel):
    """A named set of hosts; host ids are unique."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "inventory"
    hosts: tuple[HostSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Inventory:
        seen: set[str] = set()
        for host in self.hosts:
            if host.host_id in seen:
                raise ValueError(f"duplicate host_id '{host.host_id}'")
            seen.add(host.host_id)
        return self

    def by_id(self) -> dict[str, HostSpec]:
        return {h.host_id: h for h in self.hosts}


def parse_inventory(text: str, source: str) -> Inventory:
    """Parse an inventory TOML document (see examples/lab.toml)."""
    return load_model(Inventory, text, source)
