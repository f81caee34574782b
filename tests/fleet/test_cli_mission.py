"""`reaper mission create|status|list|cancel` against a real redis-server.

The commands run in-process (CliRunner); missions are driven, where a test needs them to
move, by an EngineHost and agents on threads of this process with their own Redis clients,
as a `reaper engine` and `reaper worker`s elsewhere would. Hosts are simulated, or `local`
in an audit (a scan: nothing is signalled).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from redis.exceptions import ConnectionError as RedisConnectionError

from agents.os_agents import AGENTS
from agents.pool import AgentPool
from agents.simulation import SimulatedLab
from agents.transports.local import LocalTransportFactory
from agents.transports.router import TransportRouter
from infra.redis.connection import connect
from infra.redis.keys import RedisKeys
from infra.redis.store import RedisMissionStore
from overseer.bootstrap import bootstrap
from overseer.cli import mission_cmd
from overseer.cli.app import reaper
from overseer.fleet.engine_host import EngineHost
from overseer.fleet.setup import FleetSetup, RedisPorts, open_redis_ports
from reaper_engine.config import ScannerSettings
from reaper_engine.models import AgentType, HostOutcome, MissionState, MissionStatus, TransportKind
from reaper_engine.signing import TaskSigner
from tests.integration.conftest import wait_until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "examples" / "lab.toml"
SECRET = "cli-mission-test-secret-0123456789"


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = connect(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Callable[..., Result]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("REAPER_CONFIG", raising=False)
    monkeypatch.delenv("REAPER_SECRET_FILE", raising=False)
    monkeypatch.setenv("REAPER_SECRET", SECRET)
    monkeypatch.setenv("REDIS_URL", redis_url)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(reaper, list(args))

    return invoke


@pytest.fixture
def ports(redis_url: str) -> Iterator[RedisPorts]:
    """Ports of their own (a client, a bus instance), as another process would have."""
    made = open_redis_ports(FleetSetup(redis_url, "reaper", TaskSigner(SECRET.encode())))
    try:
        yield made
    finally:
        made.close()


def load(ports: RedisPorts, mission_id: str) -> MissionState:
    state = ports.store.load(mission_id)
    assert state is not None
    return state


def create(run: Callable[..., Result], *args: str, inventory: Path = LAB) -> str:
    result = run("mission", "create", "--inventory", str(inventory), *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@dataclass
class Driver:
    """An engine and one agent per OS on threads: the fleet, in this process."""

    host: EngineHost
    pool: AgentPool | None
    stop: threading.Event
    thread: threading.Thread
    local: LocalTransportFactory


@pytest.fixture
def driver(redis_url: str) -> Iterator[Callable[..., Driver]]:
    started: list[tuple[Driver, RedisPorts]] = []

    def start(*, agents: bool = True) -> Driver:
        ports = open_redis_ports(FleetSetup(redis_url, "reaper", TaskSigner(SECRET.encode())))
        local = LocalTransportFactory.from_settings(ScannerSettings())
        router = TransportRouter(
            {TransportKind.SIMULATED: SimulatedLab(base_dir=LAB.parent), TransportKind.LOCAL: local}
        )
        pool = None
        if agents:
            workers = [cls(ports.queue, ports.bus, router) for cls in AGENTS.values()]
            pool = AgentPool(workers).start()
        host = EngineHost(
            store=ports.store,
            queue=ports.queue,
            bus=ports.bus,
            leases=ports.leases,
            engine_id="engine-test",
            poll_seconds=0.1,
            lease_seconds=5,
            max_wait=1.0,  # what `reaper engine` uses
        )
        stop = threading.Event()
        thread = threading.Thread(target=host.run, args=(stop,), daemon=True)
        thread.start()
        made = Driver(host, pool, stop, thread, local)
        started.append((made, ports))
        return made

    try:
        yield start
    finally:
        for made, ports in started:
            made.stop.set()
            made.thread.join(15)
            assert not made.thread.is_alive()
            assert made.pool is None or made.pool.stop(10)
            made.local.close()
            ports.close()


def test_cancel_ends_the_mission_and_its_engine_elsewhere_lets_go(run, ports, driver):
    mission_id = create(run, "--kind", "audit")
    # An engine but no workers: the mission is still running when it is cancelled.
    engine = driver(agents=False)
    wait_until(lambda: engine.host.missions == [mission_id], what="the engine to adopt it")

    result = run("mission", "cancel", mission_id, "--reason", "maintenance window")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{mission_id}: cancelled"
    state = load(ports, mission_id)
    assert state.status is MissionStatus.CANCELLED
    assert {h.outcome for h in state.hosts.values()} == {HostOutcome.CANCELLED}
    assert state.pending_tasks == {}
    assert all(ports.queue.size(agent) == 0 for agent in AgentType)  # withdrawn
    # The engine, another "process", is not woken by the cancel: its loop sees the final
    # status on its next turn (max_wait, 1 s) and lets the mission go.
    wait_until(lambda: engine.host.missions == [], timeout=5, what="the engine to let go")
    assert ports.leases.holder(mission_id) is None


def test_cancelling_an_unknown_mission_is_a_clean_error(run):
    result = run("mission", "cancel", "m-nope")
    assert result.exit_code == 4
    assert result.stderr == "error: no mission 'm-nope'\n"
    assert "Traceback" not in result.output


def test_cancelling_a_mission_that_ended_says_so_and_changes_nothing(run, ports):
    mission_id = create(run, "--kind", "audit")
    assert run("mission", "cancel", mission_id).exit_code == 0
    version = load(ports, mission_id).version

    again = run("mission", "cancel", mission_id)

    assert again.exit_code == 0
    assert again.stdout.strip() == f"{mission_id}: already cancelled, nothing to cancel"
    assert load(ports, mission_id).version == version


def test_watch_json_is_one_document_per_change_and_ends_with_the_mission(run, ports, driver):
    mission_id = create(run, "--kind", "reap", "--dry-run", "--retry-backoff", "0.2")
    driver()

    result = run("mission", "status", mission_id, "--watch", "--json", "--interval", "0.1")

    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(docs) >= 2  # it changed while watched (a flaky host retries after 0.2 s)
    versions = [d["version"] for d in docs]
    assert versions == sorted(set(versions))  # a line per change, none repeated
    assert docs[-1]["status"] == "completed"
    assert docs[-1] == json.loads(load(ports, mission_id).model_dump_json())

    # Once completed, a cancel changes nothing and says why.
    late = run("mission", "cancel", mission_id)
    assert late.exit_code == 0
    assert late.stdout.strip() == f"{mission_id}: already completed, nothing to cancel"


def test_watch_ends_by_itself_when_the_mission_is_cancelled_elsewhere(
    run, ports, monkeypatch: pytest.MonkeyPatch
):
    mission_id = create(run, "--kind", "audit")
    first_read = threading.Event()
    real = RedisMissionStore.load

    def load_and_tell(self: RedisMissionStore, mid: str) -> MissionState | None:
        state = real(self, mid)
        first_read.set()
        return state

    monkeypatch.setattr(RedisMissionStore, "load", load_and_tell)

    def cancel_once_watched() -> None:
        assert first_read.wait(10)
        service = bootstrap(store=ports.store, queue=ports.queue, bus=ports.bus, run_loops=False)
        service.cancel_mission(mission_id, "from another terminal")

    canceller = threading.Thread(target=cancel_once_watched, daemon=True)
    canceller.start()
    result = run("mission", "status", mission_id, "--watch", "--interval", "0.1")
    canceller.join(10)

    assert result.exit_code == 0, result.output
    assert f"Mission {mission_id} (audit): running" in result.stdout
    assert result.stdout.rstrip().count(f"Mission {mission_id}") == 2  # once per change
    assert f"Mission {mission_id} (audit): cancelled" in result.stdout
    assert "from another terminal" in result.stdout


def test_create_dry_run_with_the_rules_planner_records_kills_and_sends_no_signal(
    run, ports, driver
):
    result = run(
        "mission",
        "create",
        "--inventory",
        str(LAB),
        "--kind",
        "reap",
        "--dry-run",
        "--planner",
        "rules",
        "--retry-backoff",
        "0.2",
        "--json",
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert created["options"]["dry_run"] is True
    assert created["options"]["planner"] == "rules"
    mission_id = created["mission_id"]
    driver()
    wait_until(lambda: load(ports, mission_id).status.is_terminal, timeout=60, what="the end")

    state = load(ports, mission_id)
    assert state.status is MissionStatus.COMPLETED
    kills = [k for h in state.hosts.values() for k in h.kills]
    assert kills  # decided and recorded ...
    assert all(k.dry_run for k in kills)
    assert state.counters.kills == 0  # ... but none carried out


def test_an_unknown_planner_is_a_usage_error_naming_the_known_ones(run):
    result = run("mission", "create", "--inventory", str(LAB), "--kind", "audit", "--planner", "x")
    assert result.exit_code == 2
    assert result.stderr == "error: unknown planner 'x' (available: rules)\n"


def test_a_local_host_is_accepted_and_audited_by_a_worker_on_this_machine(
    run, ports, driver, tmp_path: Path
):
    inventory = tmp_path / "here.toml"
    inventory.write_text('[[hosts]]\nhost_id = "this-machine"\nos = "linux"\ntransport = "local"\n')
    mission_id = create(run, "--kind", "audit", inventory=inventory)
    state = load(ports, mission_id)
    assert state.hosts["this-machine"].spec.transport is TransportKind.LOCAL
    assert ports.queue.size(AgentType.LINUX) == 1  # queued for whichever linux worker runs

    driver()  # a worker with the local transport: it reads this machine's /proc
    wait_until(lambda: load(ports, mission_id).status.is_terminal, timeout=60, what="the end")

    state = load(ports, mission_id)
    assert state.status is MissionStatus.COMPLETED
    host = state.hosts["this-machine"]
    # What is found depends on this machine; that it was scanned, and nothing touched, not.
    assert host.outcome in (HostOutcome.CLEAN, HostOutcome.FINDINGS)
    assert [r.action.value for r in state.completed_tasks.values()] == ["discover", "scan"]
    assert state.counters.kills == 0  # an audit never signals


# -- a summary that cannot be read; Redis failing in the middle of a command -----------------


def test_list_shows_an_unreadable_summary_as_such_and_the_others_as_usual(run, ports):
    good = create(run, "--kind", "audit")
    bad = create(run, "--kind", "audit")
    ports.client.hset(RedisKeys("reaper").summaries(), bad, '{"mission_id": "trunc')

    table = run("mission", "list")
    as_json = run("mission", "list", "--json")

    assert table.exit_code == 0, table.output
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[2:]}
    assert rows[bad].split()[1:3] == ["-", "unreadable"]
    assert rows[good].split()[1:3] == ["audit", "running"]
    assert "mission_summary_unreadable" in table.stderr  # logged, with the reason
    assert as_json.exit_code == 0
    docs = {d["mission_id"]: d for d in json.loads(as_json.stdout)}
    assert docs[good]["status"] == "running"
    assert docs[bad]["status"] == "unreadable"
    assert "not a valid MissionSummary" in docs[bad]["error"]


def test_status_of_an_unreadable_mission_is_one_line(run, ports):
    mission_id = create(run, "--kind", "audit")
    ports.client.hset(RedisKeys("reaper").mission(mission_id), "head", "{")
    result = run("mission", "status", mission_id)
    assert result.exit_code == 4
    assert result.stderr.startswith(f"error: mission '{mission_id}' is unreadable: not a valid")
    assert "Traceback" not in result.output


def refused(*_args: Any, **_kwargs: Any) -> Any:
    raise RedisConnectionError("Error 111 connecting to 127.0.0.1. Connection refused.")


@pytest.mark.parametrize(
    ("command", "method"),
    [
        (("mission", "list"), "summary_rows"),
        (("mission", "status", "ID"), "load"),
        (("mission", "cancel", "ID"), "load"),
    ],
)
def test_redis_failing_during_a_command_is_one_line_and_exit_5(
    run, redis_url: str, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...], method: str
):
    mission_id = create(run, "--kind", "audit")
    monkeypatch.setattr(RedisMissionStore, method, refused)
    result = run(*(mission_id if arg == "ID" else arg for arg in command))
    assert result.exit_code == 5, result.output
    assert result.stderr == (
        f"error: Redis at {redis_url} is unavailable: ConnectionError: "
        "Error 111 connecting to 127.0.0.1. Connection refused.\n"
    )


def test_watch_rides_out_a_short_outage_with_a_warning(run, ports, monkeypatch: pytest.MonkeyPatch):
    mission_id = create(run, "--kind", "audit")
    real = RedisMissionStore.load
    calls = 0

    def flaky(self: RedisMissionStore, mid: str) -> MissionState | None:
        nonlocal calls
        calls += 1
        if calls in (2, 3):
            refused()
        if calls == 4:  # Redis is back, and the mission was cancelled meanwhile
            bootstrap(
                store=ports.store, queue=ports.queue, bus=ports.bus, run_loops=False
            ).cancel_mission(mission_id)
        return real(self, mid)

    monkeypatch.setattr(RedisMissionStore, "load", flaky)
    result = run("mission", "status", mission_id, "--watch", "--interval", "0.1")

    assert result.exit_code == 0, result.output
    assert result.stderr.count("still watching") == 2  # the outage, and its end
    assert "warning: Redis at" in result.stderr
    assert "is unavailable: ConnectionError" in result.stderr
    assert "warning: Redis answers again" in result.stderr
    assert f"Mission {mission_id} (audit): cancelled" in result.stdout


def test_watch_gives_up_on_a_long_outage_with_exit_5(
    run, redis_url: str, monkeypatch: pytest.MonkeyPatch
):
    mission_id = create(run, "--kind", "audit")
    real = RedisMissionStore.load
    calls = 0

    def down_after_first(self: RedisMissionStore, mid: str) -> MissionState | None:
        nonlocal calls
        calls += 1
        if calls > 1:
            refused()
        return real(self, mid)

    monkeypatch.setattr(RedisMissionStore, "load", down_after_first)
    monkeypatch.setattr(mission_cmd, "WATCH_OUTAGE_SECONDS", 0.0)
    result = run("mission", "status", mission_id, "--watch", "--interval", "0.1")

    assert result.exit_code == 5
    assert result.stderr.splitlines()[-1] == (
        f"error: Redis at {redis_url} is unavailable: ConnectionError: Error 111 connecting "
        "to 127.0.0.1. Connection refused (for over 0 s; stopped watching)"
    )
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_watch_rides_out_a_real_redis_restart(tmp_path: Path):
    """`mission status --watch` as its own process while redis-server stops and comes back."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    env = {
        **os.environ,
        "REDIS_URL": server.url,
        "REAPER_SECRET": SECRET,
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "NO_COLOR": "1",
    }
    env.pop("REAPER_CONFIG", None)
    cli = [sys.executable, "-m", "overseer.cli"]
    proc: subprocess.Popen[str] | None = None
    try:
        created = subprocess.run(
            [*cli, "mission", "create", "--inventory", str(LAB), "--kind", "audit"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        mission_id = created.stdout.strip()
        proc = subprocess.Popen(
            [*cli, "mission", "status", mission_id, "--watch", "--interval", "0.2"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        out: list[str] = []
        err: list[str] = []
        readers = [
            threading.Thread(target=lambda s=stream, b=buf: b.extend(s), daemon=True)
            for stream, buf in ((proc.stdout, out), (proc.stderr, err))
        ]
        for reader in readers:
            reader.start()
        wait_until(lambda: any("): running" in line for line in out), what="the first view")

        server.stop()
        wait_until(lambda: any("still watching" in line for line in err), timeout=30)
        assert proc.poll() is None  # still watching
        server.start()  # same port and AOF: the mission is back
        wait_until(lambda: any("answers again" in line for line in err), timeout=30)
        client = connect(server.url)
        try:
            store = RedisMissionStore(client)
            state = store.load(mission_id)
            assert state is not None
            state.status = MissionStatus.CANCELLED  # as `mission cancel` would, in short
            store.save(state)
        finally:
            client.close()

        assert proc.wait(timeout=30) == 0
        for reader in readers:
            reader.join(10)
        assert any("): cancelled" in line for line in out)
        warning = next(line for line in err if "still watching" in line)
        assert warning.startswith(f"warning: Redis at {server.url} is unavailable: ")
        assert ".;" not in warning
        assert not any("Traceback" in line for line in err)
    finally:
        if proc is not None:
            if proc.poll() is None:  # only our own child, which leads its own group
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        server.stop()
