"""Where reaper.toml is found and read: XDG and home user files, the nearest project file,
--config and REAPER_CONFIG, and files that are missing, unreadable or not UTF-8."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config_files import find_project_config, load_config, user_config_path
from reaper_engine.errors import ConfigError
from reaper_engine.models import Priority
from tests.unit.config_helpers import config_error, load, user_file, write


def test_user_config_path_honours_xdg_config_home(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": str(xdg)}) == (
        xdg / "reaper" / "reaper.toml"
    )
    assert user_config_path({"HOME": "/h"}) == Path("/h/.config/reaper/reaper.toml")
    # Empty or relative values are invalid per the XDG spec and ignored.
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": ""}) == Path(
        "/h/.config/reaper/reaper.toml"
    )
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}) == Path(
        "/h/.config/reaper/reaper.toml"
    )


def test_xdg_config_home_file_is_loaded(tmp_path: Path, project: Path, home: Path) -> None:
    xdg = tmp_path / "xdg"
    path = write(xdg / "reaper" / "reaper.toml", "[daemon]\ndry_run = true\n")
    user_file(home, "[daemon]\nscan_interval_seconds = 5\n")  # not used: XDG wins
    loaded = load(project, {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)})
    assert loaded.config.daemon.dry_run is True
    assert loaded.config.daemon.scan_interval_seconds == 60
    assert loaded.sources == (path,)
    assert loaded.user_file == path


def test_user_file_in_home_config(project: Path, home: Path, env: dict[str, str]) -> None:
    path = user_file(home, "[metrics]\nhttp_port = 9100\n")
    loaded = load(project, env)
    assert loaded.config.metrics.http_port == 9100
    assert loaded.sources == (path,)
    assert loaded.user_file == path


def test_project_file_found_from_nested_subdirectory(project: Path, env: dict[str, str]) -> None:
    path = write(project / ".reaper.toml", "[daemon]\ndry_run = true\n")
    assert find_project_config(project / "src" / "deep") == path
    loaded = load(project / "src" / "deep", env)
    assert loaded.config.daemon.dry_run is True
    assert loaded.sources == (path,)
    assert loaded.user_file is None


def test_nearest_project_file_wins(project: Path) -> None:
    write(project / ".reaper.toml", "")
    nearer = write(project / "src" / ".reaper.toml", "")
    assert find_project_config(project / "src" / "deep") == nearer


def test_no_project_file(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    found = find_project_config(tmp_path / "a" / "b")
    # Something above tmp_path could hold one; nothing at or below it does.
    assert found is None or not found.is_relative_to(tmp_path)


def test_project_overrides_user_and_rules_merge_by_name(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user = user_file(
        home,
        '[daemon]\ndry_run = true\nscan_interval_seconds = 30\n\n[[rules]]\nname = "hung_test"\n'
        'priority = "critical"\n',
    )
    proj = write(
        project / ".reaper.toml",
        """# Project: bashrs. Mutation testing takes longer.
[daemon]
scan_interval_seconds = 10

[[rules]]
name = "hung_test"

[rules.conditions]
age_hours = 12
command_patterns = ["cargo mutants", "cargo-nextest"]

[[rules]]
name = "memory_hog"
enabled = false
""",
    )
    loaded = load(project / "src", env)
    config = loaded.config
    assert loaded.sources == (user, proj)
    assert loaded.user_file == user
    assert config.daemon.dry_run is True
    assert config.daemon.scan_interval_seconds == 10
    hung = config.rule("hung_test")
    memory = config.rule("memory_hog")
    assert hung is not None
    assert memory is not None
    assert hung.priority is Priority.CRITICAL
    assert hung.conditions.age_hours == 12
    assert hung.conditions.cpu_percent_max == 5.0
    assert hung.conditions.command_patterns == ("cargo mutants", "cargo-nextest")
    assert memory.enabled is False


def test_explicit_path_replaces_user_file(
    tmp_path: Path, project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, "[daemon]\ndry_run = true\n")
    explicit = write(tmp_path / "other.toml", "[metrics]\nenabled = false\n")
    proj = write(project / ".reaper.toml", "[notifications]\nenabled = false\n")
    loaded = load(project, env, explicit)
    assert loaded.config.daemon.dry_run is False  # the user file was not read
    assert loaded.config.metrics.enabled is False
    assert loaded.config.notifications.enabled is False  # the project file still applies
    assert loaded.sources == (explicit, proj)
    assert loaded.user_file == explicit


def test_reaper_config_env_replaces_user_file(
    tmp_path: Path, project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, "[daemon]\ndry_run = true\n")
    chosen = write(tmp_path / "chosen.toml", "[metrics]\nhttp_port = 1234\n")
    loaded = load(project, {**env, "REAPER_CONFIG": str(chosen)})
    assert loaded.config.daemon.dry_run is False
    assert loaded.config.metrics.http_port == 1234
    assert loaded.user_file == chosen


def test_explicit_path_beats_reaper_config_env(tmp_path: Path, env: dict[str, str]) -> None:
    by_env = write(tmp_path / "env.toml", "[metrics]\nhttp_port = 1\n")
    by_flag = write(tmp_path / "flag.toml", "[metrics]\nhttp_port = 2\n")
    loaded = load(tmp_path, {**env, "REAPER_CONFIG": str(by_env)}, by_flag)
    assert loaded.config.metrics.http_port == 2
    assert loaded.user_file == by_flag


def test_relative_and_tilde_explicit_paths(tmp_path: Path, home: Path, env: dict[str, str]) -> None:
    write(tmp_path / "rel.toml", "[metrics]\nhttp_port = 3\n")
    write(home / "mine.toml", "[metrics]\nhttp_port = 4\n")
    assert load(tmp_path, env, Path("rel.toml")).config.metrics.http_port == 3
    mine = load(tmp_path, {**env, "REAPER_CONFIG": "~/mine.toml"})
    assert mine.config.metrics.http_port == 4
    assert mine.user_file == home / "mine.toml"


def test_explicit_path_that_is_the_project_file_is_applied_once(
    project: Path, env: dict[str, str]
) -> None:
    proj = write(project / ".reaper.toml", "[daemon]\ndry_run = true\n")
    loaded = load(project, env, proj)
    assert loaded.sources == (proj,)


def test_missing_explicit_file_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "nope.toml"
    err = config_error(tmp_path, env, missing)
    assert err.source == str(missing)
    assert str(err) == f"{missing}: no such file"
    err = config_error(tmp_path, {**env, "REAPER_CONFIG": str(missing)})
    assert err.source == str(missing)
    assert str(err) == f"{missing}: no such file (named by $REAPER_CONFIG)"


def test_explicit_directory_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    err = config_error(tmp_path, env, tmp_path)
    assert str(err) == f"{tmp_path}: is not a file"


def test_unreadable_and_non_utf8_files(project: Path, env: dict[str, str]) -> None:
    path = project / ".reaper.toml"
    path.write_bytes(b"[daemon]\n# \xff\n")
    err = config_error(project, env)
    assert err.source == str(path)
    assert "not UTF-8" in str(err)
    assert "byte offset 11" in str(err)
    assert err.__cause__ is None  # no UnicodeDecodeError traceback
    assert err.__suppress_context__


def test_non_utf8_user_file(project: Path, home: Path, env: dict[str, str]) -> None:
    path = user_file(home, "")
    path.write_bytes(b"\xfe\xff[daemon]\n")
    err = config_error(project, env)
    assert err.source == str(path)
    assert str(err).startswith(f"{path}: not UTF-8 text: ")
    assert "byte offset 0" in str(err)


def test_a_config_in_a_directory_we_cannot_enter_is_a_clear_error(tmp_path, monkeypatch):
    locked = tmp_path / "locked" / "reaper.toml"
    locked.parent.mkdir()
    locked.write_text("")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    # Root can enter any directory, so the refusal is simulated where pathlib meets it.
    monkeypatch.setattr(type(locked), "is_file", denied)
    with pytest.raises(ConfigError, match=r"locked/reaper\.toml: cannot read: Permission denied"):
        load_config(explicit=locked, cwd=tmp_path, env={"HOME": str(tmp_path)})
