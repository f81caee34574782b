"""The audit log file: one intact JSON line per decision, XDG location, rotation, concurrency."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agents.simulation import SimulatedLab
from agents.terminator import Terminator
from infra.audit_log import (
    JsonLinesAuditSink,
    MemoryAuditSink,
    default_audit_path,
    expand_log_path,
    read_audit,
    read_audit_file,
)
from reaper_engine.audit import AuditRecord
from reaper_engine.models import Finding, ProcessIdentity, ProcessInfo
from reaper_engine.rules import RuleAction
from reaper_engine.safety import SafetyPolicy, SafetySettings
from reaper_engine.signals import Signal
from tests.factories import T0, clock, host_spec

REPO = Path(__file__).resolve().parents[2]

# Appendix B of seed 000, plus what the seed leaves out: outcome and the process start time.
SEED_FIELDS = {
    "timestamp",
    "action",
    "pid",
    "command",
    "rule",
    "priority",
    "reason",
    "signal",
    "cpu_percent",
    "memory_mb",
    "age_hours",
    "user",
    "hostname",
    "config_file",
    "dry_run",
}


def sample(n: int = 0, **kw: object) -> AuditRecord:
    """Seed 000's first Appendix B entry; ``n`` makes each record distinguishable."""
    fields: dict[str, object] = {
        # n + 1 ms: every timestamp has a fraction, so records of n < 90 have one size
        "timestamp": T0 + timedelta(milliseconds=n + 1),
        "action": "kill",
        "pid": 2174710 + n,
        "start_time": 1761897892.5,
        "command": "/tmp/test_ch04_debug",
        "rule": "infinite_loop",
        "priority": "critical",
        "reason": "CPU 99.9% for 5h 12m",
        "signal": "SIGKILL",
        "cpu_percent": 99.9,
        "memory_mb": 3.35,
        "age_hours": 5.2,
        "user": "noah",
        "hostname": "dev-machine",
        "config_file": "/home/noah/.config/reaper/reaper.toml",
        "dry_run": False,
        "outcome": "terminated",
    }
    fields.update(kw)
    return AuditRecord.model_validate(fields)


def all_lines(sink: JsonLinesAuditSink) -> list[str]:
    return [line for f in sink.files() for line in f.read_text().splitlines()]


def assert_intact(lines: list[str]) -> list[AuditRecord]:
    """Every line is a whole record: valid JSON that validates as an AuditRecord."""
    return [AuditRecord.model_validate_json(line) for line in lines]


# -- format ---------------------------------------------------------------------------------


def test_one_json_line_per_record_with_every_seed_field(tmp_path):
    sink = JsonLinesAuditSink(tmp_path / "reaper" / "reaper.log")
    records = [sample(i) for i in range(3)]

    for r in records:
        sink.record(r)

    lines = sink.path.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert SEED_FIELDS | {"outcome", "start_time"} <= first.keys()
    assert first["timestamp"] == "2025-10-31T13:00:00.001000Z"
    assert first["action"] == "kill"
    assert first["signal"] == "SIGKILL"
    assert first["memory_mb"] == 3.35
    assert first["dry_run"] is False
    assert first["outcome"] == "terminated"
    assert first["start_time"] == 1761897892.5
    assert sink.written == 3
    assert sink.failures == 0
    assert read_audit(sink.path) == records


def test_read_audit_skips_and_counts_malformed_lines(tmp_path):
    path = tmp_path / "reaper.log"
    good = sample()
    path.write_text(
        good.model_dump_json() + "\n" + '{"action": "ki\n' + "not json\n\n" + '{"pid": 1}\n'
    )

    result = read_audit_file(path)
    with capture_logs() as logs:
        records = read_audit(path)

    assert result.records == [good]
    assert result.skipped == 3
    assert records == [good]
    assert logs[-1]["event"] == "audit_lines_skipped"
    assert logs[-1]["skipped"] == 3


def test_read_audit_of_a_missing_file_is_empty(tmp_path):
    assert read_audit(tmp_path / "never-written.log") == []


def test_memory_sink_keeps_records_in_order():
    sink = MemoryAuditSink()
    sink.record(sample(0))
    sink.record(sample(1))
    assert [r.pid for r in sink.records] == [2174710, 2174711]


# -- location -------------------------------------------------------------------------------


def test_default_path_honours_xdg_data_home():
    env = {"HOME": "/home/noah", "XDG_DATA_HOME": "/data/noah"}
    assert default_audit_path(env) == Path("/data/noah/reaper/reaper.log")


def test_default_path_without_xdg_data_home():
    assert default_audit_path({"HOME": "/home/noah"}) == Path(
        "/home/noah/.local/share/reaper/reaper.log"
    )


@pytest.mark.parametrize("xdg", ["", "relative/data"])
def test_empty_or_relative_xdg_data_home_is_ignored(xdg):
    env = {"HOME": "/home/noah", "XDG_DATA_HOME": xdg}
    assert default_audit_path(env) == Path("/home/noah/.local/share/reaper/reaper.log")


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        # the seed's default spelling follows XDG_DATA_HOME ...
        (
            "~/.local/share/reaper/reaper.log",
            {"HOME": "/home/noah", "XDG_DATA_HOME": "/data/noah"},
            "/data/noah/reaper/reaper.log",
        ),
        # ... and is under HOME without it
        (
            "~/.local/share/reaper/reaper.log",
            {"HOME": "/home/noah"},
            "/home/noah/.local/share/reaper/reaper.log",
        ),
        # any other ~ path is just HOME-relative
        (
            "~/logs/reaper.log",
            {"HOME": "/home/noah", "XDG_DATA_HOME": "/data/noah"},
            "/home/noah/logs/reaper.log",
        ),
        # an explicit path is never redirected, even if it is the default location
        (
            "/home/noah/.local/share/reaper/reaper.log",
            {"HOME": "/home/noah", "XDG_DATA_HOME": "/data/noah"},
            "/home/noah/.local/share/reaper/reaper.log",
        ),
        ("/var/log/reaper.log", {"HOME": "/home/noah"}, "/var/log/reaper.log"),
    ],
)
def test_expand_log_path(value, env, expected):
    assert expand_log_path(value, env) == Path(expected)


def test_from_settings_uses_the_logging_table():
    env = {"HOME": "/home/noah", "XDG_DATA_HOME": "/data/noah"}
    sink = JsonLinesAuditSink.from_settings(
        env, file="~/.local/share/reaper/reaper.log", max_size_mb=2, rotate_count=3
    )
    assert sink.path == Path("/data/noah/reaper/reaper.log")
    assert sink.max_bytes == 2 * 1024 * 1024
    assert sink.backups == 3
    assert JsonLinesAuditSink.from_settings(env).path == Path("/data/noah/reaper/reaper.log")


# -- permissions ----------------------------------------------------------------------------


def test_file_is_owner_only_and_directory_is_created_owner_only(tmp_path):
    sink = JsonLinesAuditSink(tmp_path / "share" / "reaper" / "reaper.log")
    sink.record(sample())
    assert stat.S_IMODE(sink.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(sink.path.parent.stat().st_mode) == 0o700


def test_unwritable_location_is_logged_and_counted_not_raised(tmp_path):
    # A regular file where the directory should be: fails even for root, unlike chmod.
    blocker = tmp_path / "reaper"
    blocker.write_text("")
    sink = JsonLinesAuditSink(blocker / "reaper.log")

    with capture_logs() as logs:
        sink.record(sample())
        sink.record(sample(1))

    assert sink.failures == 2
    assert sink.written == 0
    failed = [e for e in logs if e["event"] == "audit_write_failed"]
    assert len(failed) == 2
    assert failed[0]["path"] == str(blocker / "reaper.log")
    assert failed[0]["log_level"] == "error"
    assert "error" in failed[0]


@pytest.mark.parametrize(("max_bytes", "backups"), [(0, 5), (100, -1)])
def test_rejects_nonsense_limits(tmp_path, max_bytes, backups):
    with pytest.raises(ValueError, match="must be"):
        JsonLinesAuditSink(tmp_path / "reaper.log", max_bytes=max_bytes, backups=backups)


# -- rotation -------------------------------------------------------------------------------


def line_size() -> int:
    return len(sample(0).model_dump_json()) + 1  # sample(n) for n < 90 has the same size


def test_rotates_before_a_write_that_would_pass_the_limit(tmp_path):
    size = line_size()
    sink = JsonLinesAuditSink(tmp_path / "reaper.log", max_bytes=2 * size, backups=5)

    for i in range(3):
        sink.record(sample(i))

    # two lines fill the file exactly; the third would pass the limit, so it starts a new file
    assert [r.pid for r in read_audit_file(sink.backup_path(1)).records] == [2174710, 2174711]
    assert [r.pid for r in read_audit_file(sink.path).records] == [2174712]
    assert sink.path.stat().st_size <= sink.max_bytes
    assert stat.S_IMODE(sink.path.stat().st_mode) == 0o600


def test_rotation_keeps_rotate_count_backups_and_drops_the_oldest(tmp_path):
    sink = JsonLinesAuditSink(tmp_path / "reaper.log", max_bytes=line_size(), backups=3)

    for i in range(6):  # one line per file: the log + 3 backups hold the last 4
        sink.record(sample(i))

    assert sink.files() == [
        sink.backup_path(3),
        sink.backup_path(2),
        sink.backup_path(1),
        sink.path,
    ]
    assert not sink.backup_path(4).exists()
    assert [r.pid - 2174710 for r in read_audit(sink.path, backups=3)] == [2, 3, 4, 5]
    assert sink.written == 6


def test_no_record_lost_and_no_line_split_when_backups_suffice(tmp_path):
    sink = JsonLinesAuditSink(tmp_path / "reaper.log", max_bytes=2000, backups=100)
    records = [sample(i, reason="x" * (i % 7 * 40)) for i in range(120)]  # varying sizes

    for r in records:
        sink.record(r)

    assert len(sink.files()) > 10
    for f in sink.files():
        assert f.read_bytes().endswith(b"\n")
        assert f.stat().st_size <= 2000
    assert assert_intact(all_lines(sink)) == records


def test_backups_zero_truncates_in_place(tmp_path):
    sink = JsonLinesAuditSink(tmp_path / "reaper.log", max_bytes=2 * line_size(), backups=0)

    for i in range(5):
        sink.record(sample(i))

    assert sink.files() == [sink.path]
    assert not sink.backup_path(1).exists()
    assert [r.pid - 2174710 for r in read_audit(sink.path)] == [4]  # truncated before #2 and #4


def test_a_line_longer_than_the_limit_is_written_whole(tmp_path):
    sink = JsonLinesAuditSink(tmp_path / "reaper.log", max_bytes=100, backups=2)
    sink.record(sample(0))
    sink.record(sample(1))
    assert [r.pid for r in read_audit(sink.path, backups=2)] == [2174710, 2174711]
    assert sink.failures == 0


# -- concurrency ----------------------------------------------------------------------------


def test_concurrent_threads_write_intact_lines_only(tmp_path):
    threads, per_thread = 8, 200
    # small files and enough backups: rotation races with writes and still loses nothing
    sink = JsonLinesAuditSink(tmp_path / "reaper.log", max_bytes=64 * 1024, backups=100)
    start = threading.Barrier(threads)

    def writer(t: int) -> None:
        start.wait()  # all threads write at once
        for i in range(per_thread):
            sink.record(sample(t * 1000 + i))

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()

    records = assert_intact(all_lines(sink))
    assert len(records) == threads * per_thread
    assert len({r.pid for r in records}) == threads * per_thread
    assert sink.written == threads * per_thread
    assert sink.failures == 0
    assert len(sink.files()) > 1  # it did rotate


_CHILD = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from infra.audit_log import JsonLinesAuditSink
from reaper_engine.audit import AuditRecord

path, writer, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sink = JsonLinesAuditSink(path, max_bytes=32 * 1024, backups=100)
base = dict(
    timestamp=datetime(2025, 10, 31, 13, tzinfo=UTC), action="kill", start_time=1.0,
    command="/tmp/test_ch04_debug", rule="infinite_loop", priority="critical",
    reason="CPU 99.9% for 5h 12m", signal="SIGKILL", cpu_percent=99.9, memory_mb=3.35,
    age_hours=5.2, user="noah", hostname=f"writer-{writer}", dry_run=False, outcome="terminated",
)
records = [AuditRecord(pid=writer * 100000 + i, **base) for i in range(count)]
print("ready", flush=True)
sys.stdin.read()  # the parent closes stdin once every child is ready: they start together
for r in records:
    sink.record(r)
print(sink.written, sink.failures, flush=True)
"""


def test_concurrent_processes_append_intact_lines_only(tmp_path):
    path, per_process = tmp_path / "reaper.log", 200
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), str(n), str(per_process)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.close()
    outputs = []
    for child in children:
        assert child.stdout is not None
        outputs.append(child.stdout.read().strip())
        child.wait(timeout=60)

    assert [c.returncode for c in children] == [0, 0]
    assert outputs == [f"{per_process} 0", f"{per_process} 0"]
    sink = JsonLinesAuditSink(path, backups=100)  # to list the files both children wrote
    records = assert_intact(all_lines(sink))
    assert len(records) == 2 * per_process
    assert {r.hostname for r in records} == {"writer-1", "writer-2"}
    assert len(sink.files()) > 1
    for n in (1, 2):  # each writer's own records stay in its order
        mine = [r.pid for r in records if r.hostname == f"writer-{n}"]
        assert mine == sorted(mine)


# -- with the real Terminator ------------------------------------------------------------------


def finding_for(info: ProcessInfo, host_id: str, rule: str, reason: str) -> Finding:
    return Finding(
        identity=ProcessIdentity(host_id=host_id, pid=info.pid, create_time=info.create_time),
        rule=rule,
        priority="critical",
        reason=reason,
        command=info.command,
        name=info.name,
        user=info.user,
        cpu_percent=info.cpu_percent,
        rss_mb=info.rss_mb,
        age_seconds=info.age_seconds(T0),
    )


def test_terminator_writes_one_line_per_decision(tmp_path):
    c = clock()
    transport = SimulatedLab(c).open(host_spec("dev-machine", user="noah"))
    terminator = Terminator(
        transport,
        SafetyPolicy(SafetySettings(), transport.vantage()),
        clock=c,
        audit=(sink := JsonLinesAuditSink(tmp_path / "reaper" / "reaper.log")),
    )
    loop, sibling = transport.get_process(2174710), transport.get_process(2215386)
    assert loop is not None
    assert sibling is not None
    kill = RuleAction(signal=Signal.SIGKILL, fallback_signal=None)

    terminator.terminate(
        finding_for(loop, "dev-machine", "infinite_loop", "CPU 99.9% for 5h 12m"),
        kill,
        dry_run=False,
    )
    terminator.terminate(
        finding_for(sibling, "dev-machine", "infinite_loop", "CPU 99.9% for 4h 53m"),
        kill,
        dry_run=True,
    )

    lines = [json.loads(line) for line in sink.path.read_text().splitlines()]
    assert len(lines) == 2
    real, dry = lines
    assert SEED_FIELDS | {"outcome", "start_time"} <= real.keys()
    assert real["action"] == "kill"
    assert real["signal"] == "SIGKILL"
    assert real["outcome"] == "terminated"
    assert real["dry_run"] is False
    assert real["pid"] == 2174710
    assert real["start_time"] == loop.create_time
    assert real["command"] == "/tmp/test_ch04_debug"
    assert real["hostname"] == "dev-machine"
    assert real["user"] == "noah"
    assert real["memory_mb"] == pytest.approx(3.35)  # rss is whole bytes: 3.3499994
    assert real["age_hours"] == 5.2
    assert dry["action"] == "dry_run"
    assert dry["signal"] is None
    assert dry["outcome"] == "dry_run"
    assert dry["dry_run"] is True
    assert dry["pid"] == 2215386
    assert transport.get_process(2174710) is None  # the real kill happened ...
    assert transport.get_process(2215386) is not None  # ... the dry run did not
    assert os.stat(sink.path).st_size > 0
