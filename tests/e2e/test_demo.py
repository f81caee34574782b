"""End to end: the demo's mission over examples/lab.toml, as a subprocess and in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agents.simulation import SimulatedLab
from overseer.bootstrap import in_memory_fleet
from overseer.inventory import load_inventory
from reaper_engine.models import (
    AgentType,
    HostOutcome,
    HostStatus,
    MissionKind,
    MissionOptions,
    MissionStatus,
    TransportKind,
)

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "examples" / "lab.toml"

# host -> (outcome, failures, locked, processes reaped)
EXPECTED = {
    "lnx-dev-01": (HostOutcome.REAPED, 0, False, 8),
    "lnx-ci-02": (HostOutcome.REAPED, 1, False, 2),  # flaky: one failed discover, one retry
    "mac-dev-01": (HostOutcome.REAPED, 0, False, 4),
    "win-build-01": (HostOutcome.REAPED, 0, False, 5),
    "win-qa-02": (HostOutcome.LOCKED, 3, True, 0),  # unreachable: locked after 3 failures
}
ROGUE = {
    "lnx-dev-01": {2174710, 2215386, 2256525, 4179152, 627250, 686678, 1393626, 10252},
    "lnx-ci-02": {48211, 39020},
    "mac-dev-01": {14022, 15510, 16033, 17120},
    "win-build-01": {7010, 7424, 7600, 8100, 9900},
}


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_demo_mission_reaps_the_lab_and_locks_the_dead_host():
    lab = SimulatedLab(base_dir=LAB.parent)
    inventory = load_inventory(LAB)
    with in_memory_fleet({TransportKind.SIMULATED: lab}) as fleet:
        state = fleet.overseer.create_mission(
            MissionKind.REAP, inventory, MissionOptions(retry_backoff_seconds=0.05)
        )
        final = fleet.overseer.wait_for(state.mission_id, timeout=30)
    assert final.status is MissionStatus.COMPLETED
    got = {
        h.host_id: (h.outcome, h.failure_count, h.locked, h.successful_kills)
        for h in final.hosts.values()
    }
    assert got == EXPECTED
    assert final.hosts["win-qa-02"].last_status is HostStatus.LOCKED
    for spec in inventory.hosts:
        table = {p.pid for p in lab.host(spec).table.processes}
        alive = {p.pid for p in lab.host(spec).processes()}
        rogue = ROGUE.get(spec.host_id, set())
        # The rogue processes are gone; every other process of the table survived.
        assert alive == table - rogue, spec.host_id
    assert final.counters.kills == sum(len(p) for p in ROGUE.values())
    assert final.counters.results_applied == len(final.completed_tasks)


def test_audit_mission_touches_nothing():
    lab = SimulatedLab(base_dir=LAB.parent)
    inventory = load_inventory(LAB)
    with in_memory_fleet({TransportKind.SIMULATED: lab}) as fleet:
        state = fleet.overseer.create_mission(
            "audit", inventory, MissionOptions(retry_backoff_seconds=0.05)
        )
        final = fleet.overseer.wait_for(state.mission_id, timeout=30)
    assert final.status is MissionStatus.COMPLETED
    assert final.counters.kills == 0
    assert final.hosts["lnx-dev-01"].outcome is HostOutcome.FINDINGS
    assert all(not lab.host(s).signals_received for s in inventory.hosts)
    summary = fleet.overseer.list_missions()
    assert [s.mission_id for s in summary] == [state.mission_id]


def queued(fleet) -> dict[AgentType, int]:
    """Tasks waiting in each agent type's queue (a fleet runs one mission here)."""
    return {agent_type: fleet.queue.size(agent_type) for agent_type in AgentType}


def test_cancel_stops_a_running_mission():
    lab = SimulatedLab(base_dir=LAB.parent)
    inventory = load_inventory(LAB)
    with in_memory_fleet({TransportKind.SIMULATED: lab}) as fleet:
        # No agent takes work: the first tasks stay queued, so cancelling must withdraw them
        # (with agents running, they would have drained the queues anyway).
        assert fleet.agents.stop(timeout=10) is True
        state = fleet.overseer.create_mission("reap", inventory)
        assert state.status is MissionStatus.RUNNING
        assert sum(queued(fleet).values()) == len(inventory.hosts) == len(state.pending_tasks)

        cancelled = fleet.overseer.cancel_mission(state.mission_id, "test")
        final = fleet.overseer.wait_for(state.mission_id, timeout=10)

    assert cancelled.status is MissionStatus.CANCELLED
    assert final.status is MissionStatus.CANCELLED
    assert {h: (s.outcome, s.outcome_detail) for h, s in final.hosts.items()} == {
        h.host_id: (HostOutcome.CANCELLED, "test") for h in inventory.hosts
    }
    assert final.pending_tasks == {}
    assert queued(fleet) == dict.fromkeys(AgentType, 0)  # withdrawn from every queue
    withdrawn = {r.task_id: r.error_code for r in final.completed_tasks.values()}
    assert set(withdrawn) == set(state.pending_tasks)
    assert set(withdrawn.values()) == {"CANCELLED"}


def test_cancel_while_agents_are_at_work():
    lab = SimulatedLab(base_dir=LAB.parent)
    inventory = load_inventory(LAB)
    # The dead host's retries wait 30 s: the mission cannot finish before we cancel it.
    with in_memory_fleet({TransportKind.SIMULATED: lab}) as fleet:
        state = fleet.overseer.create_mission(
            "reap", inventory, MissionOptions(retry_backoff_seconds=30)
        )
        cancelled = fleet.overseer.cancel_mission(state.mission_id, "test")
        final = fleet.overseer.wait_for(state.mission_id, timeout=10)

    assert cancelled.status is MissionStatus.CANCELLED
    assert final.status is MissionStatus.CANCELLED
    outcomes = {h: s.outcome for h, s in final.hosts.items()}
    # A fast host may have finished before the cancel; nothing changed after it.
    assert outcomes == {h: s.outcome for h, s in cancelled.hosts.items()}
    assert None not in outcomes.values()
    assert outcomes["win-qa-02"] is HostOutcome.CANCELLED  # it was waiting out a 30 s retry
    assert final.pending_tasks == {}
    assert queued(fleet) == dict.fromkeys(AgentType, 0)


def test_demo_runs_and_prints_the_per_host_table():
    proc = run_demo("--timeout", "15")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "completed" in out
    for host_id, (outcome, failures, locked, kills) in EXPECTED.items():
        row = next(line for line in out.splitlines() if line.startswith(host_id + " "))
        cells = row.split()
        assert cells[3] == outcome.value, row
        assert cells[4] == f"{failures}/3", row
        assert cells[5] == ("yes" if locked else "no"), row
        assert cells[-1] == str(kills), row
    assert "LOCKED" in out  # the live progress showed the lock as it happened
    # This machine was scanned for real, in dry run: whatever it found, it killed nothing.
    local = next(line for line in out.splitlines() if line.startswith("this-machine "))
    assert local.split()[3] in {"clean", "findings"}, local
    assert local.split()[-1] == "0", local


def test_demo_dry_run_kills_nothing():
    proc = run_demo("--dry-run", "--quiet", "--timeout", "15")
    assert proc.returncode == 0, proc.stderr
    assert "0 killed" in proc.stdout
    assert "would reap 8" in proc.stdout


def test_demo_help_documents_options():
    proc = run_demo("--help")
    assert proc.returncode == 0
    for option in ("--inventory", "--kind", "--dry-run", "--timeout", "--log-format"):
        assert option in proc.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[[hosts]]\nhost_id = 'a'\nos = 'linux'\ncolour = 'red'\n", ":4: key 'hosts.0.colour'"),
        ("[[hosts]\n", ":1:"),
    ],
)
def test_demo_rejects_a_bad_inventory_with_one_clear_line(tmp_path, content, expected):
    bad = tmp_path / "bad.toml"
    bad.write_text(content)
    proc = run_demo("--inventory", str(bad))
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}")
    assert expected in line


def test_fleet_stops_every_thread_promptly_even_mid_mission():
    lab = SimulatedLab(base_dir=LAB.parent)
    fleet = in_memory_fleet({TransportKind.SIMULATED: lab})
    # A 30 s backoff keeps the mission's loop alive and waiting when we stop it.
    fleet.overseer.create_mission(
        "reap", load_inventory(LAB), MissionOptions(retry_backoff_seconds=30)
    )
    assert fleet.close(timeout=5) is True


@pytest.mark.parametrize("args", [("--kind", "bogus"), ("--timeout", "soon"), ("--nope",)])
def test_demo_bad_options_are_bad_input_not_a_timeout(args):
    # argparse's own exit code, 2, is this program's "timed out".
    proc = run_demo(*args)
    assert proc.returncode == 3, proc.stderr
    assert "error:" in proc.stderr
    assert "Traceback" not in proc.stderr
