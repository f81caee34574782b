"""A dict that tells a watcher which of its keys were set or deleted.

A mission's pending tasks and task records are dicts the engine edits in place, and stores
write only the entries that changed (infra/state_parts.py). Finding those by comparing every
entry with the copy last saved costs a walk over the whole mission per save, however little
changed; a ``TrackedDict`` instead adds each key it sets or deletes to ``watch`` (a set the
store hands it), so a save costs what the batch changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

_V = TypeVar("_V")


class TrackedDict(dict[str, _V]):
    """A ``dict`` whose every change adds the keys it touched to ``watch`` (when set).

    Copies, deep copies and unpickled copies start unwatched: they are other objects."""

    __slots__ = ("watch",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch: set[str] | None = None

    def _touched(self, keys: Iterable[str]) -> None:
        if self.watch is not None:
            self.watch.update(keys)

    def __setitem__(self, key: str, value: _V) -> None:
        super().__setitem__(key, value)
        if self.watch is not None:
            self.watch.add(key)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        if self.watch is not None:
            self.watch.add(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self._touched((key,))
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, _V]:
        key, value = super().popitem()
        self._touched((key,))
        return key, value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self._touched((key,))
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        other = dict(*args, **kwargs)
        super().update(other)
        self._touched(other)

    def clear(self) -> None:
        self._touched(list(self))
        super().clear()

    def __ior__(self, other: Any) -> TrackedDict[_V]:  # type: ignore[override,misc]
        self.update(other)
        return self

    def __copy__(self) -> TrackedDict[_V]:
        return type(self)(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> TrackedDict[_V]:
        return type(self)({key: copy.deepcopy(value, memo) for key, value in self.items()})

    def __reduce__(self) -> tuple[type[TrackedDict[_V]], tuple[dict[str, _V]]]:
        return (type(self), (dict(self),))


def tracked(value: Mapping[str, _V]) -> TrackedDict[_V]:
    """``value`` as a TrackedDict (itself if it is one)."""
    return value if isinstance(value, TrackedDict) else TrackedDict(value)
