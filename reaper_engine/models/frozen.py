"""Read-only JSON mappings for the dict fields of stored models.

Stores save a mission in parts and write only the parts an assignment changed
(infra/state_parts.py), so a value changed in place (``host.facts["k"] = v``) would be
saved by nobody and lost without a word. The models' dict fields (``HostState.facts``,
``Task.params``, ``HostSpec.options``) therefore hold a ``FrozenDict``: changing one raises
at once, where the mistake is, instead of losing data somewhere later. Change such a field
by assigning a new mapping: ``host.facts = {**host.facts, "k": v}``.

Nested values are frozen too (dicts become ``FrozenDict``, lists and tuples become tuples),
since ``facts["cpu"]["count"] = 4`` would be lost the same way. A ``FrozenDict`` is a
``dict``: it serialises, compares and unpacks as one, so JSON documents are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NoReturn

from pydantic import AfterValidator


class FrozenDict(dict[str, Any]):
    """A ``dict`` that refuses every change after it is built."""

    __slots__ = ()

    def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise TypeError(
            "this mapping is read-only (stores save only assigned fields): assign a new "
            "one instead, e.g. host.facts = {**host.facts, key: value}"
        )

    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse

    # Immutable, so a copy may be the object itself; pickling must not replay __setitem__.
    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, _memo: dict[int, Any]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (type(self), (dict(self),))


# What a JSON document's leaves are: returned as they are, and asked about first (most
# values are leaves; a Mapping check is an ABC lookup, several times slower).
_LEAVES = (str, int, float, type(None), FrozenDict)


def freeze(value: Any) -> Any:
    """``value`` with every dict made a ``FrozenDict`` and every list or tuple a tuple."""
    if isinstance(value, _LEAVES):
        return value  # a FrozenDict was built by this function: its values are frozen
    if isinstance(value, dict | Mapping):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple([freeze(item) for item in value])
    return value


def _freeze_mapping(value: dict[str, Any]) -> Mapping[str, Any]:
    frozen: Mapping[str, Any] = freeze(value)
    return frozen


# Typed as a Mapping so that mypy, too, rejects an assignment into it.
FrozenJSON = Annotated[Mapping[str, Any], AfterValidator(_freeze_mapping)]
