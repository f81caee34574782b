"""Fleet mode as separate processes on a real redis-server: `reaper engine`, `reaper worker`
and `reaper mission` subprocesses, and the faults they must survive.

Every host here is simulated: nothing on this machine is signalled but the test's own
subprocesses (the engine and workers it started, and the redis-server of the fixture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from infra.redis.connection import connect
from infra.redis.queue import RqTaskQueue
from reaper_engine.clock import SystemClock
from reaper_engine.models import (
    Action,
    AgentType,
    HostOutcome,
    MissionState,
    MissionStatus,
    ResultEvent,
    Task,
)
from reaper_engine.signing import TaskSigner
from tests.factories import host_spec, make_task
from tests.integration.conftest import wait_until
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "examples" / "lab.toml"
SECRET = "fleet-e2e-secret-0123456789abcdef"
AGENTS = ("linux", "macos", "windows")


class Fleet:
    """Subprocesses of one test; every one is stopped (SIGTERM, then SIGKILL) at teardown."""

    def __init__(self, tmp: Path, redis: RedisServer) -> None:
        self.tmp = tmp
        self.redis = redis
        self.logs = tmp / "logs"
        self.logs.mkdir()
        config = tmp / "reaper.toml"
        config.write_text(f'[logging]\nfile = "{tmp / "audit.log"}"\n')
        self.env = {
            **os.environ,
            "REDIS_URL": redis.url,
            "REAPER_SECRET": SECRET,
            "REAPER_CONFIG": str(config),
            "HOME": str(tmp),
            "XDG_CONFIG_HOME": str(tmp / "config"),
            "XDG_DATA_HOME": str(tmp / "data"),
            "XDG_STATE_HOME": str(tmp / "state"),
            "NO_COLOR": "1",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "overseer.cli", "--log-format", "json", *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def engine(self, name: str = "engine-a") -> subprocess.Popen[bytes]:
        return self.spawn(
            name, "engine", "--name", name, "--poll-seconds", "0.2", "--lease-seconds", "2"
        )

    def worker(self, agent: str, name: str | None = None) -> subprocess.Popen[bytes]:
        name = name or f"worker-{agent}"
        return self.spawn(name, "worker", "--agent", agent, "--name", name)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "overseer.cli", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def create(self, inventory: Path, *options: str) -> str:
        done = self.cli("mission", "create", "--inventory", str(inventory), *options)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def state(self, mission_id: str) -> MissionState:
        done = self.cli("mission", "status", mission_id, "--json")
        assert done.returncode == 0, done.stderr
        return MissionState.model_validate_json(done.stdout)

    def wait_finished(self, mission_id: str, timeout: float = 90) -> MissionState:
        wait_until(
            lambda: self.state(mission_id).status.is_terminal,
            timeout=timeout,
            what=f"mission {mission_id} to finish; logs in {self.logs}",
        )
        return self.state(mission_id)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


@pytest.fixture
def redis_server_aof(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fleet(tmp_path: Path, redis_server_aof: RedisServer) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, redis_server_aof)
    try:
        yield fleet
    finally:
        fleet.close()


def slow_inventory(tmp: Path, latency: float, hosts: int = 1) -> Path:
    """Linux hosts whose every call takes ``latency`` seconds: tasks we can catch in flight."""
    entries = "".join(
        textwrap.dedent(
            f"""
            [[hosts]]
            host_id = "slow-{n}"
            os = "linux"
            transport = "simulated"
            user = "noah"
            [hosts.options]
            process_table = "linux-incident"
            latency_seconds = {latency}
            """
        )
        for n in range(hosts)
    )
    path = tmp / "slow.toml"
    path.write_text(entries)
    return path


def assert_each_result_applied_once(state: MissionState) -> None:
    # Every applied result completes one task: a result counted twice would break this.
    assert state.counters.results_applied == len(state.completed_tasks)
    assert not state.pending_tasks


def rq_started(fleet: Fleet, queue: str) -> int:

    client = Redis.from_url(fleet.redis.url)
    try:
        return StartedJobRegistry(queue, connection=client).count
    finally:
        client.close()


def scan_task(task_id: str, latency: float = 0.0, timeout: float = 120.0) -> Task:
    """A signed-able scan of a simulated linux host, due now (no engine needed to queue it)."""
    options = {"process_table": "linux-incident", "latency_seconds": latency}
    host = host_spec("sim-1", options=options)
    return make_task(
        Action.SCAN, host=host, task_id=task_id, now=SystemClock().now(), timeout=timeout
    )


def queue_tasks(fleet: Fleet, *tasks: Task) -> None:
    client = connect(fleet.redis.url)
    try:
        queue = RqTaskQueue(client, TaskSigner(SECRET.encode()))
        assert queue.publish_many(tasks) == len(tasks)
    finally:
        client.close()


def results_of(fleet: Fleet, mission_id: str = "m1") -> list[ResultEvent]:
    """The results workers appended to the mission's stream (no engine reads them here)."""
    client = connect(fleet.redis.url)
    try:
        entries = client.xrange(f"reaper:events:{mission_id}")
    finally:
        client.close()
    return [ResultEvent.model_validate_json(fields[b"event"]) for _, fields in entries]


def result_ids(fleet: Fleet) -> list[str]:
    return [r.task_id for r in results_of(fleet)]


def log_count(fleet: Fleet, name: str, event: str) -> int:
    return sum(1 for line in fleet.log(name).splitlines() if f'"event": "{event}"' in line)


# -- the happy path --------------------------------------------------------------------------


def test_a_mission_over_the_lab_completes_across_processes(fleet: Fleet):
    fleet.engine()
    for agent in AGENTS:
        fleet.worker(agent)
    mission_id = fleet.create(LAB, "--kind", "reap", "--retry-backoff", "0.2")
    final = fleet.wait_finished(mission_id)
    assert final.status is MissionStatus.COMPLETED
    outcomes = {h.host_id: (h.outcome, h.successful_kills) for h in final.hosts.values()}
    assert outcomes == {
        "lnx-dev-01": (HostOutcome.REAPED, 8),
        "lnx-ci-02": (HostOutcome.REAPED, 2),
        "mac-dev-01": (HostOutcome.REAPED, 4),
        "win-build-01": (HostOutcome.REAPED, 5),
        "win-qa-02": (HostOutcome.LOCKED, 0),
    }
    assert_each_result_applied_once(final)
    # Readable by any other process: the list and the text view.
    listed = fleet.cli("mission", "list", "--json")
    assert [m["mission_id"] for m in json.loads(listed.stdout)] == [mission_id]
    shown = fleet.cli("mission", "status", mission_id)
    assert "completed" in shown.stdout
    assert "win-qa-02" in shown.stdout
    # The workers' kills are in the audit log, signed tasks only.
    audit = [json.loads(line) for line in (fleet.tmp / "audit.log").read_text().splitlines()]
    assert sum(1 for r in audit if r["action"] == "kill") == 19
    assert {r["mission_id"] for r in audit} == {mission_id}


def test_health_reports_live_and_missing_processes(fleet: Fleet):
    fleet.engine("engine-h")
    fleet.worker("linux", "worker-h")
    wait_until(
        lambda: fleet.cli("health", "--engine", "engine-h").returncode == 0,
        what="the engine's heartbeat",
    )
    wait_until(
        lambda: fleet.cli("health", "--worker", "worker-h").returncode == 0,
        what="the worker's registration",
    )
    assert fleet.cli("health", "--engine", "nobody").returncode == 1
    fleet.kill("engine-h", signal.SIGTERM)  # a clean stop forgets its heartbeat at once
    assert fleet.cli("health", "--engine", "engine-h").returncode == 1


# -- security and bad input ------------------------------------------------------------------


def test_without_a_secret_fleet_commands_refuse_unless_insecure(fleet: Fleet):
    del fleet.env["REAPER_SECRET"]
    refused = fleet.cli("mission", "create", "--inventory", str(LAB), "--kind", "audit")
    assert refused.returncode == 2
    assert "--insecure" in refused.stderr
    assert "Traceback" not in refused.stderr
    allowed = fleet.cli(
        "mission", "create", "--inventory", str(LAB), "--kind", "audit", "--insecure"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "fleet_insecure" in allowed.stderr


def test_a_worker_with_a_secret_refuses_unsigned_tasks(fleet: Fleet):
    del fleet.env["REAPER_SECRET"]
    mission_id = fleet.create(LAB, "--kind", "audit", "--insecure", "--retry-backoff", "0.1")
    fleet.env["REAPER_SECRET"] = SECRET
    fleet.engine()
    for agent in AGENTS:
        fleet.worker(agent)
    final = fleet.wait_finished(mission_id)
    codes = {r.error_code for r in final.completed_tasks.values()}
    assert "TASK_UNSIGNED" in codes
    assert final.counters.kills == 0
    assert all(h.outcome is HostOutcome.FAILED for h in final.hosts.values()), {
        h.host_id: h.outcome for h in final.hosts.values()
    }
    assert "task_rejected" in fleet.log("worker-linux")


def test_unreachable_redis_is_one_clear_line_without_the_password(fleet: Fleet):
    port = fleet.redis.port
    fleet.redis.stop()
    done = fleet.cli(
        "mission", "list", "--redis-url", f"redis://:hunter2-secret@127.0.0.1:{port}/0"
    )
    assert done.returncode == 5
    assert "hunter2" not in done.stderr
    assert f"127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


# -- faults ----------------------------------------------------------------------------------


def test_a_worker_killed_mid_task_is_replaced_and_the_mission_completes(fleet: Fleet):
    inventory = slow_inventory(fleet.tmp, latency=1.5)
    fleet.engine()
    fleet.worker("linux", "worker-1")
    mission_id = fleet.create(
        inventory, "--kind", "audit", "--task-timeout", "4", "--retry-backoff", "0.2"
    )
    wait_until(lambda: rq_started(fleet, "reaper-linux") >= 1, what="a task in flight")
    fleet.kill("worker-1")  # SIGKILL: no chance to finish or to report
    fleet.worker("linux", "worker-2")
    final = fleet.wait_finished(mission_id)
    assert final.status is MissionStatus.COMPLETED
    assert final.hosts["slow-0"].outcome is HostOutcome.FINDINGS
    assert final.counters.timeouts >= 1  # the killed task timed out and was retried
    assert_each_result_applied_once(final)


def test_sigterm_lets_a_worker_finish_its_task_before_it_exits(fleet: Fleet):
    inventory = slow_inventory(fleet.tmp, latency=1.0)
    fleet.engine()
    worker = fleet.worker("linux", "worker-1")
    mission_id = fleet.create(inventory, "--kind", "audit", "--task-timeout", "30")
    wait_until(lambda: rq_started(fleet, "reaper-linux") >= 1, what="a task in flight")
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(30) == 0
    del fleet.procs["worker-1"]
    # The task it was running finished and reported: applied, not timed out.
    wait_until(
        lambda: fleet.state(mission_id).counters.results_applied >= 1,
        what="the interrupted worker's result",
    )
    fleet.worker("linux", "worker-2")
    final = fleet.wait_finished(mission_id)
    assert final.status is MissionStatus.COMPLETED
    assert final.counters.timeouts == 0
    assert_each_result_applied_once(final)


def test_an_engine_killed_mid_mission_is_resumed_by_another(fleet: Fleet):
    inventory = slow_inventory(fleet.tmp, latency=0.1, hosts=3)
    fleet.engine("engine-a")
    fleet.worker("linux")
    mission_id = fleet.create(inventory, "--kind", "reap", "--retry-backoff", "0.2")
    wait_until(
        lambda: fleet.state(mission_id).counters.results_applied >= 3,
        what="the first results applied by engine A",
    )
    fleet.kill("engine-a")  # SIGKILL: its lease lapses; its read events stay pending
    fleet.engine("engine-b")
    final = fleet.wait_finished(mission_id)
    assert final.status is MissionStatus.COMPLETED
    assert {h.outcome for h in final.hosts.values()} == {HostOutcome.REAPED}
    assert final.counters.kills == 3 * 8
    assert_each_result_applied_once(final)
    # Nothing was lost and covered up by a timeout and a retry: every result reached an
    # engine, the dead one's read-but-unacknowledged ones by reclaiming.
    assert final.counters.timeouts == 0
    assert "mission_adopted" in fleet.log("engine-b")


def test_a_redis_restart_mid_mission_is_survived_by_every_process(fleet: Fleet):
    inventory = slow_inventory(fleet.tmp, latency=0.1, hosts=2)
    fleet.engine()
    fleet.worker("linux")
    mission_id = fleet.create(inventory, "--kind", "reap", "--retry-backoff", "0.2")
    wait_until(
        lambda: fleet.state(mission_id).counters.results_applied >= 2,
        what="the first results",
    )
    fleet.redis.restart()  # AOF on: the mission, queues and streams come back
    final = fleet.wait_finished(mission_id, timeout=120)
    assert final.status is MissionStatus.COMPLETED
    assert {h.outcome for h in final.hosts.values()} == {HostOutcome.REAPED}
    assert_each_result_applied_once(final)
    assert final.counters.timeouts == 0  # no result was lost to the restart
    assert all(p.poll() is None for p in fleet.procs.values())  # nobody died of it


def test_malformed_stream_entries_and_jobs_are_dead_lettered_and_the_rest_proceeds(
    fleet: Fleet,
):

    inventory = slow_inventory(fleet.tmp, latency=0.3)
    mission_id = fleet.create(inventory, "--kind", "audit", "--retry-backoff", "0.1")
    client = Redis.from_url(fleet.redis.url)
    pwned = fleet.tmp / "pwned"
    try:
        client.xadd(f"reaper:events:{mission_id}", {"event": b"{not json"})
        client.rpush("rq:queue:reaper-linux", "no-such-job")  # an id with no job behind it
        rq_queue = Queue("reaper-linux", connection=client, serializer=JSONSerializer)
        rq_queue.enqueue("agents.rq_job.run_task", "{garbage envelope")
        # A job naming another function: RQ would run it; the worker must refuse it.
        rq_queue.enqueue("os.mkdir", str(pwned))
        # A hash RQ cannot load (its dequeue raises): RQ alone would stop its worker here.
        rq_queue.enqueue("agents.rq_job.run_task", "{}", job_id="corrupt-1")
        client.hset("rq:job:corrupt-1", "status", "bogus")
        fleet.engine()
        fleet.worker("linux")
        final = fleet.wait_finished(mission_id)
        assert final.status is MissionStatus.COMPLETED
        assert final.hosts["slow-0"].outcome is HostOutcome.FINDINGS
        assert_each_result_applied_once(final)
        dead_events = client.xrange("reaper:events:dead")
        assert any(b"{not json" in b"".join(fields.values()) for _, fields in dead_events)
        queue = RqTaskQueue(client, TaskSigner(SECRET.encode()))
        wait_until(
            lambda: len(queue.dead_letters(AgentType.LINUX)) >= 4, what="refused jobs recorded"
        )
        dead = {d.payload: d.error for d in queue.dead_letters(AgentType.LINUX)}
        errors = list(dead.values())
        assert any("TASK_MALFORMED" in e for e in errors), errors
        assert any("JOB_REFUSED" in e and "os.mkdir" in e for e in errors), errors
        assert dead["no-such-job"].startswith("JOB_MISSING"), dead
        assert any(e.startswith("JOB_MALFORMED") and "bogus" in e for e in errors), errors
        assert not client.exists("rq:job:corrupt-1")
        assert not pwned.exists()
        assert fleet.procs["worker-linux"].poll() is None  # it carried on
    finally:
        client.close()


# -- a worker's own faults -------------------------------------------------------------------


def test_burst_runs_what_is_queued_then_exits(fleet: Fleet):
    queue_tasks(fleet, *(scan_task(f"burst-{n}") for n in range(3)))
    done = fleet.cli("worker", "--agent", "linux", "--burst", "--name", "burst-1")
    assert done.returncode == 0, done.stderr
    assert sorted(result_ids(fleet)) == ["burst-0", "burst-1", "burst-2"]
    assert all(r.error_code is None for r in results_of(fleet))
    client = connect(fleet.redis.url)
    try:
        assert client.llen("rq:queue:reaper-linux") == 0
        assert client.hexists("rq:worker:burst-1", "death")  # it said it was leaving
    finally:
        client.close()


def test_a_worker_killed_mid_task_comes_back_under_its_fixed_name(fleet: Fleet):
    name = "worker-linux-1"  # as docker/compose.yaml names them
    fleet.worker("linux", name)
    queue_tasks(fleet, scan_task("slow-1", latency=2.0))
    wait_until(lambda: rq_started(fleet, "reaper-linux") >= 1, what="a task in flight")
    fleet.kill(name)  # SIGKILL: its registration stays, and would for minutes
    fleet.worker("linux", name)
    queue_tasks(fleet, scan_task("after-1"))
    wait_until(
        lambda: "after-1" in result_ids(fleet),
        timeout=60,
        what=f"the restarted worker to run a task; logs in {fleet.logs}",
    )
    assert "worker_name_taken_over" in fleet.log(name)
    assert fleet.procs[name].poll() is None
    client = connect(fleet.redis.url)
    try:
        # The killed worker's job is failed in RQ, not left "started" nor run again.
        assert "slow-1" in FailedJobRegistry("reaper-linux", connection=client)
        assert StartedJobRegistry("reaper-linux", connection=client).count == 0
    finally:
        client.close()
    assert "slow-1" not in result_ids(fleet)
    assert fleet.cli("health", "--worker", name).returncode == 0


def test_a_worker_rides_out_a_redis_outage_and_its_result_is_not_lost(fleet: Fleet):
    name = "worker-linux-1"
    worker = fleet.worker("linux", name)
    queue_tasks(fleet, scan_task("during-1", latency=2.0))
    wait_until(lambda: rq_started(fleet, "reaper-linux") >= 1, what="a task in flight")
    fleet.redis.stop()
    # Down until the worker has failed to publish the task's result four times: a worker
    # that gave up after three (about 20 s) lost it, then stopped on the next Redis error.
    wait_until(
        lambda: (
            log_count(fleet, name, "result_publish_failed") >= 4
            or "result_lost" in fleet.log(name)
            or worker.poll() is not None
        ),
        timeout=90,
        what="the worker to keep trying to publish",
    )
    assert worker.poll() is None, fleet.log(name)
    fleet.redis.start()  # same port and directory, AOF on: the queue and registrations return
    wait_until(
        lambda: "during-1" in result_ids(fleet), timeout=60, what="the result to be published"
    )
    queue_tasks(fleet, scan_task("after-1"))
    wait_until(
        lambda: "after-1" in result_ids(fleet),
        timeout=60,
        what=f"a task queued after the restart to run; logs in {fleet.logs}",
    )
    assert sorted(result_ids(fleet)) == ["after-1", "during-1"]  # each once
    assert "result_lost" not in fleet.log(name)
    assert worker.poll() is None
