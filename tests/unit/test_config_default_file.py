"""The default reaper.toml (what `reaper config init` writes): it round-trips to the defaults,
shows every key with a comment, is written safely, and every key is in docs/configuration.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.config_files import _string, default_config_text, write_default_config
from reaper_engine.config import (
    DaemonSettings,
    FleetSettings,
    HealthCheck,
    LoggingSettings,
    MetricsSettings,
    NotificationSettings,
    ReaperConfig,
    ScannerSettings,
    default_document,
    merge_documents,
    validate_document,
)
from reaper_engine.errors import ConfigError
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleAction, RuleConditions
from reaper_engine.safety import SafetySettings
from reaper_engine.tomldoc import parse_toml
from tests.unit.config_helpers import load, user_file, write

REPO = Path(__file__).resolve().parents[2]


# --- the default file -----------------------------------------------------------------------


def test_default_config_text_round_trips() -> None:
    text = default_config_text()
    document = parse_toml(text, "default")
    assert validate_document(document) == ReaperConfig()
    assert validate_document(merge_documents(default_document(), document)) == ReaperConfig()


def test_default_config_text_shows_every_section_and_key() -> None:
    text = default_config_text()
    for header in ("[daemon]", "[logging]", "[notifications]", "[metrics]", "[safety]"):
        assert f"\n{header}\n" in text
    assert "\n[scanner]\n" in text
    assert "# [[health_checks]]" in text
    assert text.count("\n[[rules]]\n") == len(DEFAULT_RULES)
    models = (
        DaemonSettings,
        LoggingSettings,
        NotificationSettings,
        MetricsSettings,
        SafetySettings,
        ScannerSettings,
        HealthCheck,
        Rule,
        RuleConditions,
        RuleAction,
    )
    for model in models:
        for key in model.model_fields:
            pattern = rf"^(#?\s*{key}( =|:)|\[rules\.{key}\])"
            assert re.search(pattern, text, re.MULTILINE), key
    # Each key line has a comment line above it.
    lines = text.splitlines()
    in_sections = lines[: lines.index("[scanner]") + 5]
    for n, line in enumerate(in_sections):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[n - 1].startswith("#"), line


def test_loading_the_default_file_gives_the_defaults(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    path = user_file(home, default_config_text())
    loaded = load(project, env)
    assert loaded.config == ReaperConfig()
    assert loaded.user_file == path


def test_write_default_config(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "reaper.toml"
    assert write_default_config(target) == target
    assert target.read_text(encoding="utf-8") == default_config_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["reaper.toml"]  # no temp file


def test_write_default_config_refuses_to_overwrite(tmp_path: Path) -> None:
    target = write(tmp_path / "reaper.toml", "# mine\n")
    with pytest.raises(ConfigError) as info:
        write_default_config(target)
    assert info.value.source == str(target)
    assert "already exists" in str(info.value)
    assert target.read_text(encoding="utf-8") == "# mine\n"
    write_default_config(target, force=True)
    assert target.read_text(encoding="utf-8") == default_config_text()


def test_write_default_config_reports_os_errors(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "")
    with pytest.raises(ConfigError, match="cannot write"):
        write_default_config(blocker / "reaper.toml")


# --- documentation --------------------------------------------------------------------------


def test_every_key_is_documented() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    models = (
        ReaperConfig,
        DaemonSettings,
        LoggingSettings,
        NotificationSettings,
        MetricsSettings,
        SafetySettings,
        ScannerSettings,
        FleetSettings,
        HealthCheck,
        Rule,
        RuleConditions,
        RuleAction,
    )
    missing = [
        f"{model.__name__}.{key}"
        for model in models
        for key in model.model_fields
        if f"`{key}`" not in doc
    ]
    assert missing == []


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_default_file_string_spelling_round_trips(text: str) -> None:
    # Regexes carry backslashes and quotes: whatever the defaults hold must survive TOML.
    assert parse_toml(f"x = {_string(text)}\n", "t") == {"x": text}
