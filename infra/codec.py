"""JSON encoding of the documents that cross process boundaries (never pickle)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from reaper_engine import SCHEMA_VERSION
from reaper_engine.errors import MessageDecodeError

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> str:
    return model.model_dump_json()


def decode(model_type: type[M], payload: str | bytes) -> M:
    """Parse a payload into ``model_type``; any defect becomes MessageDecodeError."""
    try:
        model = model_type.model_validate_json(payload)
    except ValidationError as err:
        raise MessageDecodeError(
            f"not a valid {model_type.__name__}: {err.error_count()} error(s), "
            f"first: {err.errors()[0]['msg']} at {_loc(err)}"
        ) from err
    version = getattr(model, "schema_version", SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise MessageDecodeError(
            f"{model_type.__name__} has schema_version {version}; "
            f"this build reads up to {SCHEMA_VERSION}"
        )
    return model


def _loc(err: ValidationError) -> str:
    loc = err.errors()[0].get("loc", ())
    return ".".join(str(p) for p in loc) or "<root>"
