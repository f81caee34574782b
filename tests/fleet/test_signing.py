"""Signed task envelopes: only the secret's holders can order work; nothing else runs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.signing import load_secret, signer_for
from overseer.fleet.setup import resolve
from reaper_engine.config import FleetSettings
from reaper_engine.models import Action
from reaper_engine.signing import SecretError, TaskRejectedError, TaskSigner
from tests.factories import T0, make_task

SECRET = b"0123456789abcdef-test-secret"


def rejection(signer: TaskSigner, envelope: str, now=T0) -> TaskRejectedError:
    with pytest.raises(TaskRejectedError) as caught:
        signer.open(envelope, now)
    return caught.value


def test_a_sealed_task_opens_to_the_same_task():
    task = make_task(Action.REAP, params={"approved": []})
    signer = TaskSigner(SECRET)
    assert signer.open(signer.seal(task), T0) == task


def test_a_tampered_task_is_refused_and_still_named():
    signer = TaskSigner(SECRET)
    doc = json.loads(signer.seal(make_task(Action.SCAN)))
    doc["task"] = doc["task"].replace('"scan"', '"reap"')
    err = rejection(signer, json.dumps(doc))
    assert err.code == "TASK_BAD_SIGNATURE"
    assert err.task is not None
    assert err.task.action is Action.REAP


def test_another_secret_does_not_verify():
    envelope = TaskSigner(b"another-secret-of-16+bytes").seal(make_task())
    assert rejection(TaskSigner(SECRET), envelope).code == "TASK_BAD_SIGNATURE"


def test_an_unsigned_task_is_refused_by_a_worker_with_a_secret():
    envelope = TaskSigner(None).seal(make_task())
    assert json.loads(envelope)["sig"] is None
    assert rejection(TaskSigner(SECRET), envelope).code == "TASK_UNSIGNED"


def test_an_insecure_worker_runs_unsigned_tasks():
    task = make_task()
    assert TaskSigner(None).open(TaskSigner(None).seal(task), T0) == task


def test_an_expired_task_is_refused():
    signer = TaskSigner(SECRET)
    envelope = signer.seal(make_task(timeout=60))
    err = rejection(signer, envelope, now=T0 + timedelta(seconds=61))
    assert err.code == "TASK_EXPIRED"


@pytest.mark.parametrize(
    "envelope",
    [
        "not json",
        "[]",
        '{"v": 2, "task": "{}", "sig": null}',
        '{"v": 1, "task": 7, "sig": null}',
        '{"v": 1, "task": "{\\"task_id\\": 1}", "sig": null}',
    ],
)
def test_malformed_envelopes_are_refused_without_a_task(envelope):
    err = rejection(TaskSigner(SECRET), envelope)
    assert err.code == "TASK_MALFORMED"
    assert err.task is None


@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=6))
def test_no_single_character_change_in_the_task_text_verifies(position, bit):
    signer = TaskSigner(SECRET)
    doc = json.loads(signer.seal(make_task(Action.REAP, params={"approved": []})))
    text = doc["task"]
    i = position % len(text)
    changed = text[:i] + chr(ord(text[i]) ^ (1 << bit)) + text[i + 1 :]
    doc["task"] = changed
    with pytest.raises(TaskRejectedError) as caught:
        signer.open(json.dumps(doc), T0)
    assert caught.value.code in ("TASK_BAD_SIGNATURE", "TASK_MALFORMED")


def test_a_short_secret_is_refused():
    with pytest.raises(SecretError, match="at least 16"):
        TaskSigner(b"short")


def test_secret_precedence_is_the_flag_then_the_environment_then_the_config(tmp_path: Path):
    # As for the Redis URL: what a command is told, then its environment, then the config.
    files = {}
    for name in ("flag", "env-file", "config"):
        files[name] = tmp_path / name
        files[name].write_text(f"from-{name}-0123456789\n")
    env = {"REAPER_SECRET": "from-env-0123456789", "REAPER_SECRET_FILE": str(files["env-file"])}
    flag, configured = files["flag"], files["config"]
    assert load_secret(flag, env, configured=configured) == b"from-flag-0123456789"
    assert load_secret(None, env, configured=configured) == b"from-env-0123456789"
    del env["REAPER_SECRET"]
    assert load_secret(None, env, configured=configured) == b"from-env-file-0123456789"
    assert load_secret(None, {}, configured=configured) == b"from-config-0123456789"
    assert load_secret(None, env={}) is None
    # The one given wins even when it cannot be read: never a silent fallback to another.
    with pytest.raises(SecretError, match="cannot read"):
        load_secret(tmp_path / "missing", {"REAPER_SECRET": "from-env-0123456789"})


def test_unreadable_or_empty_secret_files_are_clear_errors(tmp_path: Path):
    with pytest.raises(SecretError, match="cannot read"):
        load_secret(tmp_path / "missing", env={})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        load_secret(empty, env={})


def test_no_secret_refuses_unless_insecure():
    with pytest.raises(SecretError, match="--insecure"):
        signer_for(None, insecure=False, env={})
    assert signer_for(None, insecure=True, env={}).insecure
    # A secret wins over --insecure: asking for less safety never removes a signature.
    assert not signer_for(None, insecure=True, env={"REAPER_SECRET": "x" * 16}).insecure


def test_a_task_from_a_newer_schema_is_refused_as_malformed():
    signer = TaskSigner(SECRET)
    doc = json.loads(signer.seal(make_task()))
    newer = json.loads(doc["task"])
    newer["schema_version"] = 999
    text = json.dumps(newer)
    # Signed with the real secret: a newer engine's task, not a forgery.
    signed = {"v": 1, "task": text, "sig": "hmac-sha256:" + signer._mac(text)}
    err = rejection(signer, json.dumps(signed))
    assert err.code == "TASK_MALFORMED"
    assert "schema_version 999" in str(err)


def test_a_signer_never_shows_its_secret():
    # Tracebacks with locals and debug logs print reprs.
    signer = TaskSigner(b"s3cret-s3cret-s3cret")
    assert "s3cret" not in repr(signer)
    assert "s3cret" not in str(signer)


def test_a_fleet_command_resolves_flag_then_environment_then_config(tmp_path: Path):
    files = {}
    for name in ("flag", "config"):
        files[name] = tmp_path / name
        files[name].write_text(f"from-{name}-0123456789\n")
    settings = FleetSettings(secret_file=str(files["config"]))

    def secret(flag: Path | None, env: dict[str, str]) -> bytes | None:
        setup = resolve(settings, redis_url=None, secret_file=flag, insecure=False, env=env)
        return setup.signer.secret

    env = {"REAPER_SECRET": "from-env-0123456789"}
    assert secret(files["flag"], env) == b"from-flag-0123456789"
    assert secret(None, env) == b"from-env-0123456789"
    assert secret(None, {}) == b"from-config-0123456789"
