"""TOML documents -> models, with errors that name the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.simulation import load_table
from agents.simulation.table import ProcessTable
from infra.config_files import load_config
from overseer.inventory import load_inventory, pin_table_paths
from reaper_engine.errors import ConfigError
from reaper_engine.models import OS, Inventory, TransportKind
from reaper_engine.models.frozen import FrozenDict
from reaper_engine.models.inventory import parse_inventory
from reaper_engine.tomldoc import locate, parse_toml

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "examples" / "lab.toml"
BUILTIN_TABLES = ("linux-incident", "linux-ci", "macos-dev", "windows-dev")


def _hosts_doc(third_host_extra: str = "", *, n: int = 4) -> str:
    blocks = ['# fleet\nname = "fleet"\n']
    for i in range(n):
        lines = [
            "[[hosts]]",
            f'host_id = "h{i}"',
            'os = "linux"',
            'user = "noah"',
        ]
        if i == 2 and third_host_extra:
            lines.append(third_host_extra)
        lines.append('tags = ["t"]')
        lines.append("")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def _line_of(text: str, needle: str) -> int:
    for n, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return n
    raise AssertionError(f"{needle!r} not in document")


# --- syntax errors ------------------------------------------------------------------------


def test_malformed_toml_names_file_and_line() -> None:
    text = 'name = "x"\n\n[[hosts]]\nhost_id = "a"\nos = \n'
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "fleet.toml")
    err = info.value
    assert err.source == "fleet.toml"
    assert err.line == 5
    assert str(err).startswith("fleet.toml:5: ")
    assert "(at line" not in str(err)  # tomllib's own suffix is folded into the prefix


def test_malformed_toml_unclosed_table_header() -> None:
    with pytest.raises(ConfigError) as info:
        parse_toml("a = 1\nb = 2\n[hosts\n", "x.toml")
    assert info.value.line == 3
    assert "x.toml:3" in str(info.value)


def test_duplicate_key_is_a_syntax_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_toml('name = "a"\nname = "b"\n', "dup.toml")
    assert info.value.line == 2


@pytest.mark.parametrize(
    "text",
    ["a = " + "[" * 2000, "a = " + "[" * 2000 + "]" * 2000 + "\n", "a = " + "{ b = " * 2000],
)
def test_deeply_nested_toml_is_a_config_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_toml(text, "deep.toml")
    err = info.value
    assert err.source == "deep.toml"
    assert str(err).startswith("deep.toml: nesting too deep")
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_deeply_nested_inventory_and_config_files_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("hosts = " + "[" * 3000, encoding="utf-8")
    with pytest.raises(ConfigError, match="nesting too deep") as info:
        load_inventory(path)
    assert info.value.source == str(path)
    project = tmp_path / "project"
    project.mkdir()
    (project / ".reaper.toml").write_text("rules = " + "[" * 3000, encoding="utf-8")
    with pytest.raises(ConfigError, match="nesting too deep") as info:
        load_config(cwd=project, env={"HOME": str(tmp_path / "home")})
    assert info.value.source == str(project / ".reaper.toml")


def test_moderate_nesting_still_parses() -> None:
    assert parse_toml("a = " + "[" * 50 + "]" * 50 + "\n", "ok.toml")["a"] is not None


# --- validation errors --------------------------------------------------------------------


def test_unknown_key_in_third_host_names_key_and_line() -> None:
    text = _hosts_doc('colour = "red"')
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "fleet.toml")
    err = info.value
    assert err.key == "hosts.2.colour"
    assert err.line == _line_of(text, "colour")
    assert str(err).startswith(f"fleet.toml:{err.line}")
    assert "'hosts.2.colour'" in str(err)
    assert str(err).endswith("unknown key")


def test_unknown_key_that_also_appears_in_later_hosts_points_at_the_third() -> None:
    # The same unknown key in the 3rd and the 4th host: the error is about the 3rd.
    text = _hosts_doc("bogus = 1\n", n=4).replace('host_id = "h3"', 'host_id = "h3"\nbogus = 2')
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "f.toml")
    assert info.value.key == "hosts.2.bogus"
    assert info.value.line == _line_of(text, "bogus = 1")
    assert "and 1 more error" in str(info.value)


def test_wrong_type_names_key_line_and_value() -> None:
    text = _hosts_doc('max_failures = "x"')
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "fleet.toml")
    err = info.value
    assert err.key == "hosts.2.max_failures"
    assert err.line == _line_of(text, "max_failures")
    assert "'x'" in str(err)
    assert str(err).startswith(f"fleet.toml:{err.line}")
    assert "'hosts.2.max_failures'" in str(err)


def test_bad_enum_value_names_key_and_line() -> None:
    text = _hosts_doc().replace('host_id = "h1"\nos = "linux"', 'host_id = "h1"\nos = "beos"')
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "f.toml")
    assert info.value.key == "hosts.1.os"
    assert info.value.line == _line_of(text, "beos")
    assert "'beos'" in str(info.value)


def test_top_level_wrong_type() -> None:
    text = 'name = 5\n[[hosts]]\nhost_id = "a"\nos = "linux"\n'
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "f.toml")
    assert (info.value.key, info.value.line) == ("name", 1)


def test_missing_key_points_at_its_own_host_not_a_later_one() -> None:
    # The third host has no `os`; the 4th host's `os = ...` line must not be blamed.
    text = _hosts_doc(n=4).replace('host_id = "h2"\nos = "linux"\n', 'host_id = "h2"\n')
    with pytest.raises(ConfigError) as info:
        parse_inventory(text, "f.toml")
    err = info.value
    assert err.key == "hosts.2.os"
    third_header = [n for n, line in enumerate(text.splitlines(), 1) if line == "[[hosts]]"][2]
    fourth_header = [n for n, line in enumerate(text.splitlines(), 1) if line == "[[hosts]]"][3]
    assert err.line is not None
    assert third_header <= err.line < fourth_header


def test_remote_host_without_address_is_a_config_error() -> None:
    text = 'name = "f"\n[[hosts]]\nhost_id = "a"\nos = "linux"\ntransport = "ssh"\n'
    with pytest.raises(ConfigError, match="needs an address") as info:
        parse_inventory(text, "f.toml")
    assert info.value.key == "hosts.0"
    assert info.value.line == 2


def test_duplicate_host_ids_is_a_config_error() -> None:
    text = _hosts_doc().replace('host_id = "h3"', 'host_id = "h0"')
    with pytest.raises(ConfigError, match="duplicate host_id 'h0'"):
        parse_inventory(text, "f.toml")


def test_locate_follows_nested_tables() -> None:
    text = "\n".join(
        [
            "[[hosts]]",  # 1
            'host_id = "a"',  # 2
            "[hosts.options]",  # 3
            'fail = "x"',  # 4
            "[[hosts]]",  # 5
            'host_id = "b"',  # 6
            "[hosts.options]",  # 7
            'fail = "y"',  # 8
        ]
    )
    assert locate(text, ("hosts", 1, "host_id")) == 6
    assert locate(text, ("hosts", 1, "options", "fail")) == 8
    assert locate(text, ("hosts", 0, "options")) == 3
    assert locate(text, ("nothing",)) is None


# --- load_inventory -----------------------------------------------------------------------


def test_missing_inventory_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "fleet.toml"
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    err = info.value
    assert type(err) is ConfigError
    assert err.source == str(path)
    assert str(path) in str(err)
    assert "No such file" in str(err)
    assert "Errno" not in str(err)


def test_inventory_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_inventory(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_inventory_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(_hosts_doc('max_failures = "x"'), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_inventory(str(path))
    assert str(info.value).startswith(f"{path}:")
    assert info.value.key == "hosts.2.max_failures"


@pytest.mark.parametrize(
    ("data", "offset"),
    [(b'name = "fleet"\n# caf\xe9\n', 20), (b"\xff\xfename = 1\n", 0)],
)
def test_non_utf8_inventory_is_a_config_error_with_the_byte_offset(
    tmp_path: Path, data: bytes, offset: int
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_inventory(path)
    err = info.value
    assert err.source == str(path)
    assert str(err).startswith(f"{path}: inventory is not UTF-8 text: ")
    assert f"at byte offset {offset}" in str(err)
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_example_lab_inventory() -> None:
    inv = load_inventory(LAB)
    assert isinstance(inv, Inventory)
    assert inv.name == "reaper-lab"
    by_os = {os: [h for h in inv.hosts if h.os is os] for os in OS}
    assert len(by_os[OS.WINDOWS]) >= 2
    assert len(by_os[OS.LINUX]) >= 2
    assert len(by_os[OS.MACOS]) >= 1
    assert any("fail" in h.options for h in inv.hosts)
    assert all(h.transport is TransportKind.SIMULATED for h in inv.hosts)
    assert inv.by_id()["win-build-01"].user == "LAB\\builder"
    # Every process_table it names exists.
    for host in inv.hosts:
        load_table(str(host.options["process_table"]), LAB.parent)


# --- simulated process tables -------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_TABLES)
def test_every_builtin_table_loads(name: str) -> None:
    table = load_table(name)
    assert isinstance(table, ProcessTable)
    assert table.processes
    pids = [p.pid for p in table.processes]
    assert len(pids) == len(set(pids)), "PIDs in a table are unique"
    assert table.hostname


def test_table_loads_by_path_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "t.toml").write_text(
        '[[process]]\npid = 5000\nuser = "u"\nname = "x"\nage_seconds = 1\n', encoding="utf-8"
    )
    table = load_table("t.toml", tmp_path)
    assert [p.pid for p in table.processes] == [5000]


def test_unknown_builtin_table_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no built-in process table named 'linux-nope'") as info:
        load_table("linux-nope")
    assert info.value.source == "builtin:linux-nope"


def test_missing_table_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read process table") as info:
        load_table("absent.toml", tmp_path)
    assert info.value.source == str(tmp_path / "absent.toml")


def test_broken_table_syntax_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("[[process]]\npid = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_table("broken.toml", tmp_path)
    assert info.value.line == 2
    assert str(info.value).startswith(f"{tmp_path / 'broken.toml'}:2")


def test_table_with_unknown_process_key_is_a_config_error(tmp_path: Path) -> None:
    text = (
        '[[process]]\npid = 5000\nuser = "u"\nname = "a"\nage_seconds = 1\n\n'
        '[[process]]\npid = 5001\nuser = "u"\nname = "b"\nage_seconds = 1\ncpu = 99\n'
    )
    (tmp_path / "bad.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key") as info:
        load_table("bad.toml", tmp_path)
    assert info.value.key == "process.1.cpu"
    assert info.value.line == 12


def test_table_with_bad_status_is_a_config_error(tmp_path: Path) -> None:
    text = '[[process]]\npid = 5000\nuser = "u"\nname = "a"\nage_seconds = 1\nstatus = "ok"\n'
    (tmp_path / "bad.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_table("bad.toml", tmp_path)
    assert (info.value.key, info.value.line) == ("process.0.status", 6)


def test_a_process_table_that_is_not_utf8_names_the_file(tmp_path) -> None:
    bad = tmp_path / "table.toml"
    bad.write_bytes(b"description = '\xff\xfe'\n")
    with pytest.raises(ConfigError, match=r"table\.toml.*not UTF-8"):
        load_table("table.toml", tmp_path)


def test_pinned_table_paths_are_absolute_and_the_options_stay_read_only(tmp_path: Path):
    inventory = parse_inventory(
        '[[hosts]]\nhost_id = "a"\nos = "linux"\ntransport = "simulated"\n'
        'options = { process_table = "tables/mine.toml", flaky = 2 }\n',
        str(tmp_path / "lab.toml"),
    )
    (host,) = pin_table_paths(inventory, tmp_path / "lab.toml").hosts
    assert host.options == {"process_table": str(tmp_path / "tables/mine.toml"), "flaky": 2}
    assert isinstance(host.options, FrozenDict)
    with pytest.raises(TypeError, match="read-only"):
        host.options["flaky"] = 3  # type: ignore[index]
