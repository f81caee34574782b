"""[safety] in reaper.toml: scope and scope_root_pid, whitelists, and a project file that may
only tighten what the defaults and the user configuration set."""

from __future__ import annotations

from pathlib import Path

import pytest

from reaper_engine.safety import DEFAULT_WHITELIST, SafetySettings
from reaper_engine.tomldoc import parse_toml
from tests.unit.config_helpers import config_error, line_of, load, user_file, write

# --- whitelist patterns and scope -----------------------------------------------------------


def test_bad_whitelist_pattern_in_user_file(project: Path, home: Path, env: dict[str, str]) -> None:
    path = user_file(home, '[safety]\nmin_pid = 10\nwhitelist_patterns = ["*x"]\n')
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.whitelist_patterns", 3)


@pytest.mark.parametrize("where", ["user", "project"])
def test_scope_root_pid_without_scope_descendants(
    where: str, project: Path, home: Path, env: dict[str, str]
) -> None:
    text = "[safety]\nmin_pid = 2000\nscope_root_pid = 4242\n"
    path = user_file(home, text) if where == "user" else write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.scope_root_pid", 3)
    assert "scope_root_pid only applies with scope = 'descendants'" in str(err)


def test_scope_conflict_across_files_blames_the_later_key(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, '[safety]\nscope = "descendants"\nscope_root_pid = 4242\n')
    proj = write(project / ".reaper.toml", '# narrow it again\n[safety]\nscope = "all"\n')
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(proj), "safety.scope", 3)


def test_scope_descendants_with_root_pid_is_valid(project: Path, env: dict[str, str]) -> None:
    write(project / ".reaper.toml", '[safety]\nscope = "descendants"\nscope_root_pid = 4242\n')
    safety = load(project, env).config.safety
    assert (safety.scope, safety.scope_root_pid) == ("descendants", 4242)


# --- a project file may only tighten [safety] ------------------------------------------------


@pytest.mark.parametrize(
    ("user", "text", "key", "words"),
    [
        (
            "",
            "[safety]\nmin_pid = 0\n",
            "safety.min_pid",
            "min_pid 0 is below 1000 set by the built-in defaults",
        ),
        (
            "[safety]\nmin_pid = 5000\n",
            "[daemon]\ndry_run = true\n\n[safety]\nmin_pid = 4999\n",
            "safety.min_pid",
            "min_pid 4999 is below 5000 set by the user configuration",
        ),
        ("", "[safety]\nprotect_root = false\n", "safety.protect_root", "protect_root = false"),
        (
            "[safety]\nprotect_root = false\n",
            "[safety]\nprotect_root = false\n",
            "safety.protect_root",
            "only accepted in the user configuration",
        ),
        (
            '[safety]\nscope = "baseline"\n',
            '[safety]\nscope = "all"\n',
            "safety.scope",
            "scope 'all' is wider than 'baseline' set by the user configuration",
        ),
        (
            '[safety]\nscope = "descendants"\n',
            '[safety]\nscope = "baseline"\n',
            "safety.scope",
            "scope 'baseline' is not narrower than 'descendants'",
        ),
        (
            '[safety]\nscope = "descendants"\nscope_root_pid = 4242\n',
            "[safety]\nscope_root_pid = 1\n",
            "safety.scope_root_pid",
            "scope_root_pid 1 differs from 4242 set by the user configuration",
        ),
        (
            '[safety]\nscope = "descendants"\n',  # the root is the reaper itself
            "[safety]\nscope_root_pid = 1\n",
            "safety.scope_root_pid",
            "would replace the reaper itself",
        ),
    ],
)
def test_project_file_may_not_weaken_safety(
    project: Path, home: Path, env: dict[str, str], user: str, text: str, key: str, words: str
) -> None:
    if user:
        user_file(home, user)
    path = write(project / ".reaper.toml", text)
    err = config_error(project / "src", env)
    last = key.rsplit(".", 1)[1]
    assert (err.source, err.key, err.line) == (str(path), key, line_of(text, f"{last} ="))
    assert str(err).startswith(
        f"{path}:{err.line}: key '{key}': a project file may only tighten [safety]: "
    )
    assert words in str(err)


def test_the_first_weakening_key_of_the_project_file_is_named(
    project: Path, env: dict[str, str]
) -> None:
    text = '[safety]\nmin_pid = 2000\nscope = "baseline"\nprotect_root = false\nmin_pid_x = 1\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.protect_root", 4)


def test_project_file_may_tighten_safety(project: Path, home: Path, env: dict[str, str]) -> None:
    user_file(home, "[safety]\nmin_pid = 500\nprotect_root = false\n")
    write(
        project / ".reaper.toml",
        '[safety]\nmin_pid = 3000\nprotect_root = true\nscope = "descendants"\n'
        "scope_root_pid = 4242\n",
    )
    safety = load(project, env).config.safety
    assert (safety.min_pid, safety.protect_root) == (3000, True)
    assert (safety.scope, safety.scope_root_pid) == ("descendants", 4242)


@pytest.mark.parametrize(
    ("user", "text"),
    [
        ("[safety]\nmin_pid = 2000\n", "[safety]\nmin_pid = 2000\n"),  # the same value
        ('[safety]\nscope = "baseline"\n', '[safety]\nscope = "baseline"\n'),
        (
            '[safety]\nscope = "descendants"\nscope_root_pid = 7\n',
            '[safety]\nscope = "descendants"\nscope_root_pid = 7\n',
        ),
        ('[safety]\nscope = "all"\n', '[safety]\nscope = "baseline"\n'),
    ],
)
def test_project_file_repeating_or_narrowing_the_user_settings_is_fine(
    project: Path, home: Path, env: dict[str, str], user: str, text: str
) -> None:
    user_file(home, user)
    write(project / ".reaper.toml", text)
    assert load(project, env).config.safety == SafetySettings.model_validate(
        parse_toml(text, "t")["safety"]
    )


def test_project_whitelists_add_to_the_user_ones(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, '[safety]\nwhitelist_processes = ["postgres"]\nwhitelist_patterns = ["a"]\n')
    write(
        project / ".reaper.toml",
        '[safety]\nwhitelist_processes = []\nwhitelist_patterns = ["b", "a"]\n',
    )
    safety = load(project, env).config.safety
    assert safety.whitelist_processes == ("postgres",)  # an empty list removes nothing
    assert safety.whitelist_patterns == ("a", "b")


def test_project_whitelist_adds_to_the_defaults(project: Path, env: dict[str, str]) -> None:
    write(project / ".reaper.toml", '[safety]\nwhitelist_processes = ["redis-server", "vim"]\n')
    safety = load(project, env).config.safety
    assert safety.whitelist_processes == (*DEFAULT_WHITELIST, "redis-server")


def test_user_and_explicit_files_may_relax_safety(
    tmp_path: Path, project: Path, home: Path, env: dict[str, str]
) -> None:
    relaxed = "[safety]\nmin_pid = 0\nprotect_root = false\nwhitelist_processes = []\n"
    user_file(home, relaxed)
    safety = load(project, env).config.safety
    assert (safety.min_pid, safety.protect_root, safety.whitelist_processes) == (0, False, ())
    explicit = write(tmp_path / "chosen.toml", relaxed)
    assert load(project, {"HOME": str(tmp_path / "nobody")}, explicit).config.safety == safety
    # --config naming the project file: it is the chosen file, applied once, as the user's.
    proj = write(project / ".reaper.toml", relaxed)
    assert load(project, env, proj).config.safety == safety


def test_project_safety_of_the_wrong_type_is_reported_as_such(
    project: Path, env: dict[str, str]
) -> None:
    text = '[safety]\nmin_pid = "0"\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.min_pid", 2)
    assert "valid integer" in str(err)


def test_bad_regex_added_by_the_project_whitelist_names_the_project_file(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, '[safety]\nwhitelist_patterns = ["fine"]\n')
    path = write(project / ".reaper.toml", '[safety]\nwhitelist_patterns = ["*x"]\n')
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.whitelist_patterns", 2)
    assert "invalid regex '*x'" in str(err)


def test_user_safety_must_be_valid_on_its_own_when_a_project_file_exists(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    # The user-level settings are the floor the project file is held to: it cannot repair them.
    path = user_file(home, "[safety]\nscope_root_pid = 4242\n")
    write(project / ".reaper.toml", '[safety]\nscope = "descendants"\n')
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.scope_root_pid", 2)


def test_protect_shell_ancestors_false_is_refused(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    path = user_file(home, "[safety]\nmin_pid = 10\nprotect_shell_ancestors = false\n")
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.protect_shell_ancestors", 3)
    assert "cannot be turned off" in str(err)
    assert "(got false)" in str(err)


def test_protect_shell_ancestors_true_still_loads(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, "[safety]\nprotect_shell_ancestors = true\n")
    assert load(project, env).config.safety.protect_shell_ancestors is True


@pytest.mark.parametrize("value", ["true", "false"])
def test_protect_other_users_is_an_unknown_key(
    project: Path, home: Path, env: dict[str, str], value: str
) -> None:
    path = user_file(home, f"[safety]\nprotect_other_users = {value}\n")
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.protect_other_users", 2)
    assert "unknown key" in str(err)
    assert "always protected" in str(err)
    assert "did you mean" not in str(err)
