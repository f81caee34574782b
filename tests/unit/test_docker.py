"""docker/: no Docker engine runs here, so check what can be checked without one — the
compose file's structure, that every command it runs is one our CLI accepts, and that the
image holds what those commands need."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from overseer.cli.app import reaper

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
REAPER_SERVICES = ("engine", "worker-linux", "worker-macos", "worker-windows")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def accepted_by_the_cli(argv: list[str]) -> bool:
    assert argv[0] == "reaper", argv
    # --help after the arguments: click parses every option given (an unknown one fails)
    # and stops before running anything.
    result = CliRunner().invoke(reaper, [*argv[1:], "--help"])
    return result.exit_code == 0


def test_redis_persists_with_aof_and_has_a_healthcheck(compose):
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis["volumes"], "AOF without a volume would not survive the container"
    assert "redis-cli" in redis["healthcheck"]["test"]


@pytest.mark.parametrize("name", REAPER_SERVICES)
def test_each_reaper_service_runs_a_real_command_with_a_real_healthcheck(compose, name):
    service = compose["services"][name]
    assert accepted_by_the_cli(service["command"]), service["command"]
    check = service["healthcheck"]["test"]
    assert check[0] == "CMD"
    assert accepted_by_the_cli(check[1:]), check
    # The healthcheck names the process the service starts.
    assert service["command"][service["command"].index("--name") + 1] == check[-1]
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert service["environment"]["REAPER_SECRET_FILE"] == "/run/secrets/reaper_secret"
    assert "reaper_secret" in service["secrets"]


def test_one_worker_per_agent_type(compose):
    agents = sorted(
        s["command"][s["command"].index("--agent") + 1]
        for s in compose["services"].values()
        if s.get("command", [None, None])[:2] == ["reaper", "worker"]
    )
    assert agents == ["linux", "macos", "windows"]


def test_the_secret_comes_from_a_file_never_from_the_compose_file(compose):
    assert compose["secrets"]["reaper_secret"]["file"] == "./reaper_secret"
    text = COMPOSE.read_text()
    assert "REAPER_SECRET:" not in text  # the secret itself is never inline
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "docker/reaper_secret" in ignored


def test_the_mission_tool_runs_mission_commands(compose):
    tool = compose["services"]["mission"]
    assert tool["entrypoint"] == ["reaper", "mission"]
    assert accepted_by_the_cli(["reaper", "mission", *tool["command"]])


def test_the_image_is_slim_unprivileged_and_holds_every_package():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.1[1-9]-slim\b", text, re.MULTILINE)
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user, "no USER: the container would run as root"
    assert user[-1] not in ("root", "0")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for package in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        folder = package.rstrip("*")
        assert re.search(rf"^COPY {folder} \./{folder}$", text, re.MULTILINE), folder
    installs = [shlex.split(line) for line in re.findall(r"^RUN pip install (.+)$", text, re.M)]
    assert [".[redis]"] in installs  # the fleet commands need redis and rq
    assert re.search(r"^COPY examples \./examples$", text, re.MULTILINE)  # --lab-dir examples


def test_the_cli_check_refuses_an_unknown_option():
    # The check above would prove nothing if it accepted anything.
    assert not accepted_by_the_cli(["reaper", "engine", "--no-such-option"])
    assert not accepted_by_the_cli(["reaper", "no-such-command"])
