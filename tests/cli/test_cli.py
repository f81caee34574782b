"""The ``reaper`` commands through click's CliRunner (in process; stdin is not a terminal)."""

from __future__ import annotations

import importlib
import json
import os
import re
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from infra.config_files import load_config
from overseer.cli import common
from overseer.cli.app import COMMAND_MODULES, reaper
from reaper_engine.config import ReaperConfig
from reaper_engine.rules import DEFAULT_RULES
from tests.cli.conftest import VICTIM, Victims, linux_only, scoped_config, unused_pid
from tests.integration.conftest import alive, descendants_by_cmdline, wait_until

ANSI = re.compile(r"\x1b\[")


def run(runner: CliRunner, *args: str, input: str | None = None):
    return runner.invoke(reaper, list(args), input=input, catch_exceptions=False)


def one_error_line(result, *, contains: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert contains in lines[0]
    assert "Traceback" not in result.output + result.stderr


# -- help, version, usage ----------------------------------------------------------------


def test_help_lists_every_command(runner):
    result = run(runner, "--help")
    assert result.exit_code == 0
    for command in ("scan", "kill", "explain", "rules", "config"):
        assert command in result.output
    assert "Exit codes" in result.output


def test_the_lazy_command_map_matches_what_each_module_registers():
    registered: dict[str, str] = {}
    for module in sorted(set(COMMAND_MODULES.values())):
        group = click.Group()
        importlib.import_module(f"overseer.cli.{module}").register(group)
        registered.update(dict.fromkeys(group.commands, module))
    assert registered == COMMAND_MODULES


def test_an_unknown_command_is_a_usage_error(runner):
    result = run(runner, "reap-everything")
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_version(runner):
    result = run(runner, "--version")
    assert result.exit_code == 0
    assert result.output.startswith("reaper ")


@pytest.mark.parametrize(
    "args",
    [
        ["kill"],
        ["kill", "123", "--all"],
        ["kill", "123", "--rule", "x"],
        ["kill", "--all", "--signal", "KILL"],
        ["kill", "123", "--signal", "SIGFOO"],
        ["kill", "-5"],
        ["explain"],
        ["-v", "-q", "rules"],
    ],
)
def test_usage_errors_exit_2(runner, args):
    result = runner.invoke(reaper, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# -- configuration errors ------------------------------------------------------------------


def test_missing_config_file_is_one_line_exit_2(runner, tmp_path):
    missing = tmp_path / "nope.toml"
    for command in (["scan"], ["rules"], ["config", "show"], ["explain", "1"], ["kill", "--all"]):
        result = run(runner, *command, "--config", str(missing))
        assert result.exit_code == 2, command
        one_error_line(result, contains=f"{missing}: no such file")


def test_invalid_config_names_file_line_and_key(runner, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[daemon]\ndry_run = false\nscan_interval_seconds = "60"\n')
    result = run(runner, "scan", "--config", str(bad))
    assert result.exit_code == 2
    one_error_line(result, contains=f"{bad}:3: key 'daemon.scan_interval_seconds':")
    assert result.stdout == ""


def test_reaper_config_env_is_honoured(runner, tmp_path, monkeypatch):
    bad = tmp_path / "env.toml"
    bad.write_text("[rules]\n")  # rules must be an array of tables
    monkeypatch.setenv("REAPER_CONFIG", str(bad))
    result = run(runner, "rules")
    assert result.exit_code == 2
    one_error_line(result, contains=str(bad))
    # --config wins over the environment
    good = tmp_path / "good.toml"
    good.write_text("[daemon]\ndry_run = true\n")
    assert run(runner, "rules", "--config", str(good)).exit_code == 0


# -- config validate / init / show ---------------------------------------------------------


def test_config_validate(runner, tmp_path):
    result = run(runner, "config", "validate")
    assert result.exit_code == 0
    assert "built-in defaults" in result.output
    rules = len(DEFAULT_RULES)  # not a literal: adding a built-in rule must not break this
    assert f"All {rules} rules have valid syntax" in result.output

    path = tmp_path / "mine.toml"
    path.write_text('[[rules]]\nname = "memory_hog"\nenabled = false\n')
    (Path.cwd() / ".reaper.toml").write_text("[safety]\nmin_pid = 2000\n")
    result = run(runner, "config", "validate", str(path))
    assert result.exit_code == 0
    assert f"Configuration valid: {path}" in result.output
    assert "Project override found:" in result.output
    assert f"({rules - 1} enabled)" in result.output
    assert "No conflicts detected" in result.output


def test_config_validate_reports_shadowed_rules(runner, tmp_path):
    path = tmp_path / "dup.toml"
    path.write_text(
        '[[rules]]\nname = "a_rule"\npriority = "low"\n[rules.conditions]\nage_seconds = 5\n'
        '[[rules]]\nname = "b_rule"\npriority = "low"\n[rules.conditions]\nage_seconds = 5\n'
    )
    result = run(runner, "config", "validate", "--config", str(path))
    assert result.exit_code == 0
    assert "rule 'b_rule' never applies: 'a_rule'" in result.output


def test_config_validate_invalid_and_conflicting_arguments(runner, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[safety]\nmin_pid = 10\nscope_root_pid = 5\n")
    result = run(runner, "config", "validate", str(bad))
    assert result.exit_code == 2
    one_error_line(result, contains=f"{bad}:3: key 'safety.scope_root_pid':")
    other = tmp_path / "other.toml"
    result = runner.invoke(reaper, ["config", "validate", str(bad), "--config", str(other)])
    assert result.exit_code == 2


def test_config_init_writes_once_then_needs_force(runner, home):
    result = run(runner, "config", "init")
    assert result.exit_code == 0
    written = home / ".config" / "reaper" / "reaper.toml"
    assert written.is_file()
    assert load_config(explicit=written, cwd=Path.cwd(), env=os.environ).config == ReaperConfig()
    again = run(runner, "config", "init")
    assert again.exit_code == 2
    one_error_line(again, contains="already exists (use --force to overwrite)")
    assert run(runner, "config", "init", "--force").exit_code == 0


def test_config_init_to_explicit_path(runner, tmp_path):
    target = tmp_path / "sub" / "r.toml"
    assert run(runner, "config", "init", "--config", str(target)).exit_code == 0
    assert target.is_file()


def test_config_show_round_trips(runner, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        '[daemon]\npid_file = "~/x.pid"\n[safety]\nwhitelist_patterns = [\'^/opt/\\\\w+ "q"\']\n'
        '[[rules]]\nname = "hung_test"\nenabled = false\n'
        '[[health_checks]]\nname = "unit"\ncommand = ["npm", "test"]\n'
    )
    expected = load_config(explicit=path, cwd=Path.cwd(), env=os.environ)
    result = run(runner, "config", "show", "--config", str(path))
    assert result.exit_code == 0
    assert f"2. {path}" in result.output
    assert ReaperConfig.model_validate(tomllib.loads(result.output)) == expected.config

    result = run(runner, "config", "show", "--format", "json", "--config", str(path))
    document = json.loads(result.output)
    assert document["sources"] == ["<built-in defaults>", str(path)]
    assert ReaperConfig.model_validate(document["config"]) == expected.config


# -- rules ---------------------------------------------------------------------------------


def test_rules_lists_priority_and_state(runner, tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[rules]]\nname = "memory_hog"\nenabled = false\n')
    result = run(runner, "rules", "--config", str(path))
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "Loaded Rules:"
    loop = next(line for line in lines if line.startswith("infinite_loop"))
    assert "Priority: Critical" in loop
    assert "Enabled" in loop
    assert "kill: SIGKILL" in loop
    hog = next(line for line in lines if line.startswith("memory_hog"))
    assert "Disabled" in hog
    assert not ANSI.search(result.output)  # not a terminal: plain text
    as_json = json.loads(run(runner, "rules", "--json").output)
    assert as_json[0]["name"] == "infinite_loop"


# -- scan ----------------------------------------------------------------------------------


@linux_only
def test_scan_groups_findings_and_lists_protected_separately(runner, victims: Victims, tmp_path):
    # A rule that also matches this test process: it must be listed as protected ("self").
    me = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")[0].decode()
    config = scoped_config(
        tmp_path / "self.toml",
        victims.bash,
        victims.audit,
        extra=f"""
[[rules]]
name = "me_too"
priority = "low"
[rules.conditions]
command_patterns = ['^{re.escape(me)}']
age_seconds = 0
""",
    )
    result = run(runner, "scan", "--config", str(config))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Scanning for rogue processes..." in out
    assert "Critical (1):" in out
    victim_line = next(line for line in out.splitlines() if f"PID {victims.victim} " in line)
    assert "test_cli_victim 300" in victim_line
    assert "Rule: cli_victim" in victim_line
    assert "Total: 1 rogue process detected" in out
    assert "Estimated CPU recovery:" in out
    assert "Run 'reaper kill --all' to terminate" in out
    protected = out.split("Protected (")[1]
    assert f"PID {os.getpid()} " in protected
    assert "Protected: self" in protected
    assert not ANSI.search(out)
    assert not victims.audit.exists()  # a scan decides nothing and writes no audit record


@linux_only
def test_scan_json(runner, victims: Victims):
    result = run(runner, "scan", "--json", "--dry-run", "--config", str(victims.config))
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["dry_run"] is True
    assert document["total"] == 1
    assert document["processes_scanned"] > 3
    [finding] = [f for f in document["findings"] if f["pid"] == victims.victim]
    assert finding["rule"] == "cli_victim"
    assert finding["priority"] == "critical"
    assert finding["command"] == f"{VICTIM} 300"
    assert finding["killable"] is True
    assert finding["protected_by"] is None
    for key in ("start_time", "user", "reason", "cpu_percent", "memory_mb", "age_seconds"):
        assert key in finding
    assert all(f["pid"] != victims.bystander for f in document["findings"])


def test_scan_plain_with_default_config(runner):
    result = run(runner, "scan", "--dry-run")
    assert result.exit_code == 0
    assert result.output.startswith("[Dry Run Mode - No processes will be killed]")
    assert "Scanned " in result.output


# -- explain -------------------------------------------------------------------------------


@linux_only
def test_explain_a_matching_process(runner, victims: Victims):
    result = run(runner, "explain", str(victims.victim), "--config", str(victims.config))
    assert result.exit_code == 0
    out = result.output
    assert f"PID {victims.victim}  {VICTIM} 300" in out
    assert re.search(r"MATCH\s+cli_victim \(critical\)", out)
    assert re.search(r"held\s+command matches '\^/tmp/test_cli_victim'", out)
    assert re.search(r"failed\s+age .* >= 1h 0m", out)  # zombie_test_binary is too old for it
    assert "Selected by: cli_victim" in out
    assert "Protection:  none" in out
    assert "would send SIGTERM" in out


@linux_only
def test_explain_names_the_protection(runner, victims: Victims):
    result = run(runner, "explain", str(os.getpid()), "--config", str(victims.config))
    assert result.exit_code == 0
    assert "Protection:  self" in result.output
    assert "Selected by: no rule" in result.output


def test_explain_unknown_pid(runner):
    pid = unused_pid()
    result = run(runner, "explain", str(pid))
    assert result.exit_code == 4
    one_error_line(result, contains=f"no such process: PID {pid}")


# -- kill ----------------------------------------------------------------------------------


def test_kill_unknown_pid(runner, victims: Victims):
    pid = unused_pid()
    # Scoped to the test's own children: should the PID be reused by the time the command
    # runs, the newcomer is outside the scope and cannot be signalled.
    result = run(runner, "kill", str(pid), "--yes", "--config", str(victims.config))
    assert result.exit_code == 4
    one_error_line(result, contains=f"no such process: PID {pid}")


@linux_only
def test_kill_refuses_own_process_with_reason_and_audits_it(runner, victims: Victims):
    result = run(runner, "kill", str(os.getpid()), "--yes", "--config", str(victims.config))
    assert result.exit_code == 4
    one_error_line(result, contains="is protected (self): not killed")
    [record] = victims.audit_lines()
    assert record["pid"] == os.getpid()
    assert record["action"] == "refuse"
    assert record["rule"] == "manual"
    assert record["config_file"] == str(victims.config)


@linux_only
def test_kill_refuses_a_process_outside_the_scope(runner, victims: Victims):
    # The bash itself is the scope root, not a descendant of it: out of scope.
    result = run(runner, "kill", str(victims.bash), "--yes", "--config", str(victims.config))
    assert result.exit_code == 4
    assert "outside_scope:descendants" in result.stderr
    assert alive(victims.bash)


@linux_only
def test_kill_without_terminal_and_without_yes_refuses(runner, victims: Victims):
    for args in (["kill", "--all"], ["kill", str(victims.victim)]):
        result = run(runner, *args, "--config", str(victims.config))
        assert result.exit_code == 3
        assert "stdin is not a terminal: pass --yes" in result.stderr
        assert "Proceed?" not in result.output
    assert alive(victims.victim)
    assert victims.audit_lines() == []


@linux_only
def test_kill_prompt_answered_no_kills_nothing(runner, victims: Victims, monkeypatch):
    monkeypatch.setattr(common, "stdin_is_tty", lambda: True)
    monkeypatch.setattr("overseer.cli.kill_cmd.stdin_is_tty", lambda: True)
    result = run(runner, "kill", str(victims.victim), "--config", str(victims.config), input="n\n")
    assert result.exit_code == 3
    assert f"About to kill PID {victims.victim}" in result.output
    assert "Proceed? [y/N]" in result.output
    assert "cancelled" in result.stderr
    assert alive(victims.victim)


@linux_only
def test_kill_pid_after_confirmation_with_signal(runner, victims: Victims, monkeypatch):
    monkeypatch.setattr("overseer.cli.kill_cmd.stdin_is_tty", lambda: True)
    result = run(
        runner,
        "kill",
        str(victims.victim),
        "--signal",
        "9",
        "--config",
        str(victims.config),
        input="y\n",
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "Reason: cli_victim:" in result.output
    assert "Signal: SIGKILL" in result.output
    assert f"Process {victims.victim} terminated (SIGKILL)" in result.output
    wait_until(lambda: not alive(victims.victim), what="victim gone")
    assert alive(victims.bystander)
    [record] = victims.audit_lines()
    assert (record["pid"], record["outcome"], record["signal"]) == (
        victims.victim,
        "terminated",
        "SIGKILL",
    )


@linux_only
def test_kill_all_yes(runner, victims: Victims):
    result = run(runner, "kill", "--all", "--yes", "--config", str(victims.config))
    assert result.exit_code == 0, result.output + result.stderr
    out = result.output
    assert "About to kill 1 rogue process" in out
    assert "Critical: 1 process" in out
    assert f"Process {victims.victim} terminated (SIGTERM)" in out
    assert "Killed 1 process (0 failures)" in out
    assert "CPU recovered:" in out
    assert not alive(victims.victim)
    assert alive(victims.bystander)
    assert [r["outcome"] for r in victims.audit_lines()] == ["terminated"]


@linux_only
def test_kill_all_dry_run_json_signals_nothing(runner, victims: Victims):
    result = run(runner, "kill", "--all", "--dry-run", "--json", "--config", str(victims.config))
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["dry_run"] is True
    assert [r["pid"] for r in document["results"]] == [victims.victim]
    assert document["results"][0]["outcome"] == "dry_run"
    assert document["summary"]["dry_run"] == 1
    assert alive(victims.victim)
    assert [r["action"] for r in victims.audit_lines()] == ["dry_run"]


@linux_only
def test_kill_all_with_rule_filter(runner, victims: Victims):
    result = run(
        runner, "kill", "--all", "--rule", "hung_test", "--yes", "--config", str(victims.config)
    )
    assert result.exit_code == 0
    assert "Nothing to kill: no killable process matches rule 'hung_test'" in result.output
    assert alive(victims.victim)
    unknown = run(runner, "kill", "--all", "--rule", "nope", "--config", str(victims.config))
    assert unknown.exit_code == 2
    one_error_line(unknown, contains="no rule named 'nope'")


@linux_only
def test_kill_pid_no_rule_matches_is_manual(runner, victims: Victims):
    result = run(
        runner, "kill", str(victims.bystander), "--yes", "--json", "--config", str(victims.config)
    )
    assert result.exit_code == 0, result.output + result.stderr
    document = json.loads(result.output)
    [outcome] = document["results"]
    assert outcome["rule"] == "manual"
    assert outcome["outcome"] == "terminated"
    assert outcome["signals"] == ["SIGTERM"]
    assert not alive(victims.bystander)
    assert alive(victims.victim)


@linux_only
def test_kill_that_fails_exits_1(runner, children, home, tmp_path):
    # SIG_IGN survives exec: this sleep ignores SIGTERM, and its rule has no fallback.
    bash = children.spawn(f"(trap '' TERM; exec -a {VICTIM}_stubborn sleep 300) & wait")
    found = wait_until(
        lambda: descendants_by_cmdline(bash.pid).get(f"{VICTIM}_stubborn 300"), what="stubborn"
    )
    config = scoped_config(
        tmp_path / "stubborn.toml",
        bash.pid,
        tmp_path / "audit.log",
        extra='fallback_signal = "none"\n',
    )
    result = run(runner, "kill", "--all", "--yes", "--config", str(config))
    assert result.exit_code == 1
    assert f"Process {found} failed: still alive" in result.output
    assert "Killed 0 processes (1 failure)" in result.output
    assert alive(int(str(found)))
