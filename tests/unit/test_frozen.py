"""Read-only mappings: the dict fields of stored models cannot be changed in place."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reaper_engine.models import HostSpec, HostState, MissionState, Task
from reaper_engine.models.frozen import FrozenDict, freeze
from tests.factories import make_state, make_task

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
JSON_OBJECTS = st.dictionaries(st.text(), JSON_VALUES, max_size=5)

CHANGES: dict[str, Callable[[dict[str, Any]], object]] = {
    "setitem": lambda d: d.__setitem__("k", 1),
    "delitem": lambda d: d.__delitem__("k"),
    "update": lambda d: d.update(k=1),
    "setdefault": lambda d: d.setdefault("k", 1),
    "pop": lambda d: d.pop("k"),
    "popitem": lambda d: d.popitem(),
    "clear": lambda d: d.clear(),
    "ior": lambda d: d.__ior__({"k": 1}),
}


def _mutable_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path at which ``value`` holds a dict or a list."""
    found = []
    if isinstance(value, dict):
        found.append(path)
        for key, item in value.items():
            found += _mutable_paths(item, (*path, key))
    elif isinstance(value, list | tuple):
        if isinstance(value, list):
            found.append(path)
        for index, item in enumerate(value):
            found += _mutable_paths(item, (*path, index))
    return found


@given(JSON_OBJECTS)
def test_freezing_keeps_the_json_and_leaves_nothing_changeable(document):
    frozen = freeze(document)
    assert json.loads(json.dumps(frozen)) == json.loads(json.dumps(document))
    for path in _mutable_paths(frozen):
        node = frozen
        for step in path:
            node = node[step]
        assert isinstance(node, FrozenDict), f"changeable {type(node).__name__} at {path}"


@given(JSON_OBJECTS)
def test_a_model_field_is_frozen_however_it_is_built_and_round_trips(document):
    host = HostState.from_spec(HostSpec(host_id="h1", os="linux"))
    host.facts = document
    for built in (host, HostState.model_validate_json(host.model_dump_json())):
        assert isinstance(built.facts, FrozenDict)
        assert json.loads(json.dumps(built.facts)) == json.loads(json.dumps(document))
    assert HostState.model_validate_json(host.model_dump_json()) == host


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_every_way_of_changing_it_in_place_raises(change):
    frozen = freeze({"k": 0, "nested": {"k": 0}})
    for target in (frozen, frozen["nested"]):
        with pytest.raises(TypeError, match="read-only"):
            change(target)
    assert frozen == {"k": 0, "nested": {"k": 0}}


def test_the_stored_models_dict_fields_are_read_only_including_defaults():
    state: MissionState = make_state(mission_id="m1")
    host = state.hosts["h1"]
    task: Task = make_task(params={"approved": [{"pid": 1}]})
    for mapping in (host.facts, host.spec.options, task.params, task.target.options):
        assert isinstance(mapping, FrozenDict)
    with pytest.raises(TypeError, match="assign a new one"):
        host.facts["hostname"] = "in place"
    with pytest.raises(TypeError):
        task.params["approved"][0]["pid"] = 2
    assert task.params == {"approved": ({"pid": 1},)}
    assert task.model_dump(mode="json")["params"] == {"approved": [{"pid": 1}]}


def test_assigning_a_new_mapping_counts_as_a_change_and_is_frozen():
    host = make_state(mission_id="m1").hosts["h1"]
    before = host.changes
    host.facts = {**host.facts, "hostname": "dev"}
    assert host.changes == before + 1
    assert isinstance(host.facts, FrozenDict)
    assert host.facts == {"hostname": "dev"}


def test_copies_and_pickles_stay_read_only_and_equal():
    frozen = freeze({"a": [1, {"b": 2}]})
    assert copy.copy(frozen) is frozen
    assert copy.deepcopy(frozen) is frozen
    unpickled = pickle.loads(pickle.dumps(frozen))
    assert unpickled == frozen
    assert isinstance(unpickled, FrozenDict)
    with pytest.raises(TypeError):
        unpickled["a"] = 0
    state = make_state(mission_id="m1")
    assert state.model_copy(deep=True) == state
