"""The local reaper on real processes: detect with short thresholds, kill, spare the rest.

Every config here is scoped to the test's own children (scope = "descendants"), so nothing
else on the machine can be selected, whatever the rules say.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import psutil
import pytest

from agents.os_agents import LinuxAgent
from agents.platform import ProcfsReader, PsutilReader
from agents.terminator import Terminator
from agents.transports.local import LocalTransportFactory
from infra.memory import InMemoryEventBus, InMemoryTaskQueue
from overseer.bootstrap import in_memory_fleet
from reaper_engine.config import ScannerSettings
from reaper_engine.models import (
    OS,
    HostOutcome,
    HostSpec,
    KillOutcome,
    MissionOptions,
    MissionStatus,
    Priority,
    Task,
    TransportKind,
)
from reaper_engine.rules import Rule, RuleAction, RuleConditions
from reaper_engine.safety import SafetySettings, policy_for
from reaper_engine.signals import Signal
from tests.factories import clock, make_task
from tests.fakes import finding_for
from tests.integration.conftest import alive, descendants_by_cmdline, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux host")

BUSY = "/tmp/test_reaper_busy_loop"
SIBLING = "/tmp/test_reaper_sibling_loop"

# The seed rules, with thresholds short enough for a test. 5% CPU, not 90: under a loaded
# CI machine a busy loop may get a small share of a core, and the sleepers sit at 0%.
RULES = (
    Rule(
        name="infinite_loop",
        priority=Priority.CRITICAL,
        conditions=RuleConditions(cpu_percent_min=5, duration_seconds=1),
        action=RuleAction(signal=Signal.SIGKILL, fallback_signal=None),
    ),
    Rule(
        name="hung_test",
        priority=Priority.HIGH,
        conditions=RuleConditions(
            age_seconds=1, cpu_percent_max=5, command_patterns=("cargo-nextest",)
        ),
        action=RuleAction(signal=Signal.SIGTERM, timeout_seconds=2),
    ),
    Rule(
        name="orphaned_monitor",
        priority=Priority.LOW,
        conditions=RuleConditions(
            age_seconds=1,
            cpu_percent_max=5,
            command_patterns=(r"^(\S*/)?tail -f", r" -f /dev/null$"),
        ),
        action=RuleAction(signal=Signal.SIGTERM, timeout_seconds=2),
    ),
)

ROOT_SCRIPT = f"""
(exec -a {BUSY} bash -c 'while :; do :; done') &
(exec -a cargo-nextest sleep 300) &
tail -f /dev/null &
(exec -a vim tail -f /dev/null) &
sleep 300 &
wait
"""


def scoped_to(root_pid: int) -> SafetySettings:
    # Root runs CI: root's processes are ours here, and only this subtree may be touched.
    return SafetySettings(
        protect_root=False, min_pid=2, scope="descendants", scope_root_pid=root_pid
    )


def this_host() -> HostSpec:
    return HostSpec(host_id="localhost", os=OS.LINUX, transport=TransportKind.LOCAL)


def test_reap_mission_on_this_machine_kills_only_the_rogue_children(children):
    root = children.spawn(ROOT_SCRIPT)
    sibling = children.spawn(f"exec -a {SIBLING} bash -c 'while :; do :; done'")
    # Wait for the command lines, not a count: a forked child shows its parent's command
    # line until it execs.
    expected = {"cargo-nextest 300", "tail -f /dev/null", "vim -f /dev/null", "sleep 300"}
    kids = wait_until(
        lambda: (
            (k := descendants_by_cmdline(root.pid)).keys() >= expected
            and any(cmd.startswith(BUSY) for cmd in k)
            and k
        ),
        what="the root's five children to exec",
    )
    busy = next(pid for cmd, pid in kids.items() if cmd.startswith(BUSY))
    rogue = {busy, kids["cargo-nextest 300"], kids["tail -f /dev/null"]}
    spared = {kids["vim -f /dev/null"], kids["sleep 300"]}
    factory = LocalTransportFactory(sample_seconds=0.3)
    with in_memory_fleet(
        {TransportKind.LOCAL: factory}, rules=RULES, safety=scoped_to(root.pid)
    ) as fleet:
        # Old enough to match: every rule above needs one second of age.
        wait_until(lambda: all(_age(pid) > 1.2 for pid in rogue), what="children to age")
        state = fleet.overseer.create_mission(
            "reap", [this_host()], MissionOptions(task_timeout_seconds=30)
        )
        final = fleet.overseer.wait_for(state.mission_id, timeout=60)
    factory.close()
    assert final.status is MissionStatus.COMPLETED, final.hosts["localhost"].outcome_detail
    host = final.hosts["localhost"]
    assert host.outcome is HostOutcome.REAPED, host.outcome_detail
    found = [(f.identity.pid, f.rule, f.reason, f.protected_by) for f in host.findings]
    assert {k.identity.pid for k in host.kills if k.outcome.is_success} == rogue, found
    for pid in rogue:
        wait_until(lambda pid=pid: not alive(pid), what=f"pid {pid} to exit")
    assert all(alive(pid) for pid in spared)
    vim = next(f for f in host.findings if f.identity.pid == kids["vim -f /dev/null"])
    assert vim.protected_by == "whitelisted:vim"
    assert alive(sibling.pid)  # matched infinite_loop, but outside the scope
    assert alive(root.pid)
    assert alive(os.getpid())


def test_a_finding_whose_pid_now_names_another_process_is_not_signalled(children):
    victim = children.spawn("exec sleep 300")
    factory = LocalTransportFactory(sample_seconds=0)
    transport = factory.open(this_host())
    info = wait_until(lambda: transport.get_process(victim.pid), what="the child")
    # The finding remembers a different start time: as if the PID had been reused since.
    stale = info.model_copy(update={"create_time": info.create_time - 50})
    policy = policy_for(
        scoped_to(os.getpid()), transport.vantage(), transport.list_processes().processes
    )
    terminator = Terminator(transport, policy, clock=clock())
    record = terminator.terminate(finding_for(stale), RuleAction(), dry_run=False)
    factory.close()
    assert record.outcome is KillOutcome.ALREADY_GONE
    assert record.signals == ()
    assert alive(victim.pid)


def test_sigterm_then_sigkill_against_a_process_that_ignores_sigterm(children, tmp_path):
    ready = tmp_path / "trapped"
    stubborn = children.spawn(f"trap '' TERM; : > '{ready}'; while :; do sleep 0.05; done")
    factory = LocalTransportFactory(sample_seconds=0)
    transport = factory.open(this_host())
    # Signalled before its trap is set, the shell would simply die of SIGTERM.
    wait_until(ready.exists, what="the child to ignore SIGTERM")
    info = wait_until(lambda: transport.get_process(stubborn.pid), what="the child")
    policy = policy_for(
        scoped_to(os.getpid()), transport.vantage(), transport.list_processes().processes
    )
    terminator = Terminator(transport, policy, clock=clock())
    action = RuleAction(signal=Signal.SIGTERM, timeout_seconds=0.5, fallback_signal=Signal.SIGKILL)
    record = terminator.terminate(finding_for(info), action, dry_run=False)
    factory.close()
    assert record.outcome is KillOutcome.KILLED
    assert record.signals == ("SIGTERM", "SIGKILL")
    # The leader is dead but not yet reaped, so its PID (and group) cannot have been reused:
    # end the group's short-lived `sleep` too, then reap.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(stubborn.pid, signal.SIGKILL)
    stubborn.wait(timeout=10)


def test_pytest_itself_and_its_parents_are_protected_whatever_the_rules_say():
    factory = LocalTransportFactory(sample_seconds=0)
    transport = factory.open(this_host())
    me = transport.get_process(os.getpid())
    assert me is not None
    everything = Rule(
        name="everything", priority=Priority.CRITICAL, conditions=RuleConditions(age_seconds=0)
    )
    agent = LinuxAgent(
        InMemoryTaskQueue(),
        InMemoryEventBus(),
        factory,
        rules=(everything,),
        safety=SafetySettings(protect_root=False, min_pid=0),
    )
    findings = agent.look(transport, host_id="localhost").findings
    factory.close()
    by_pid = {f.identity.pid: f for f in findings}
    assert by_pid[os.getpid()].protected_by == "self"
    assert by_pid[os.getppid()].protected_by in {
        "ancestor",
        "own_process_group",
        "own_session",
        "pid_1",
    }


def _task() -> Task:
    return make_task(host=this_host())


def _age(pid: int) -> float:
    return time.time() - psutil.Process(pid).create_time()


def test_scanner_settings_choose_the_reader_and_the_sample():
    fast = LocalTransportFactory.from_settings(ScannerSettings(cpu_sample_seconds=0.1))
    portable = LocalTransportFactory.from_settings(ScannerSettings(use_procfs=False))
    assert isinstance(fast.reader, ProcfsReader)
    assert fast.sample_seconds == 0.1
    assert isinstance(portable.reader, PsutilReader)
    fast.close()
    portable.close()
