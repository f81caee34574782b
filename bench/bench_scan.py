"""Time a full local scan (read + CPU% + safety policy + 10 rules) beside psutil and `ps`.

Usage: .venv/bin/python bench/bench_scan.py [--procs 1000] [--busy 20] [--reps 7] [--nice -10]

Spawns ``--procs`` idle children (``sleep 600``, each in a session of its own) so that the
table is big enough to measure, then times, as medians over ``--reps`` rounds:

* ``procfs read``   ProcfsReader.read(), steady state: the euid of settled processes is
                    remembered from the previous read (agents/platform/procfs.py)
* ``procfs read, cold`` a fresh ProcfsReader's first read: ``status`` read for every
                    root-owned process
* ``local scan``    LocalTransport.list_processes() with CPU history already present, then
                    policy_for(...) and Detector(10 rules).evaluate(...): what a scan task does
* ``rules only``    Detector(10 rules).evaluate(...) over a snapshot taken beforehand
* ``psutil``        psutil.process_iter() with the attributes a scan needs
* ``ps``            ``ps -eo pid,ppid,uid,etimes,times,pcpu,rss,args``, output read
* ``sampling scan`` a first scan with no history (two reads 0.2 s apart), fewer rounds

The methods take turns within each round, so the machine's noise lands on all of them alike:
the ratios to psutil and ps from the same run are the figures to compare between runs. Then
it starts ``--busy`` busy loops (``bash -c 'while :; do :; done'``, each in a session of its
own, as runaway test loops are) and measures everything again, without and then with
boost_own_cpu_share(nice=--nice), which it undoes before exiting. Every child is killed (by
its process group) and reaped in ``finally``, also on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import structlog

from agents.platform import ProcfsReader
from agents.platform.priority import BoostResult, boost_own_cpu_share, restore_cpu_share
from agents.platform.procfs import EUID_SETTLED_SECONDS
from agents.transports.local import LocalTransportFactory
from reaper_engine.detector import Detector
from reaper_engine.models import OS, HostSpec, ProcessInfo, TransportKind
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleConditions
from reaper_engine.safety import SafetySettings, policy_for

# Absolute paths: the bench must not run whatever a writable PATH entry calls "ps".
PS_COMMAND = [shutil.which("ps") or "/bin/ps", "-eo", "pid,ppid,uid,etimes,times,pcpu,rss,args"]
SLEEP = shutil.which("sleep") or "/bin/sleep"
BASH = shutil.which("bash") or "/bin/bash"
# What a scan reads per process, asked of psutil the way its docs recommend (one oneshot()).
PSUTIL_ATTRS = [
    "pid",
    "ppid",
    "uids",
    "username",
    "name",
    "exe",
    "cmdline",
    "create_time",
    "status",
    "cpu_times",
    "memory_info",
]
HOST = HostSpec(host_id="bench", os=OS.LINUX, transport=TransportKind.LOCAL)
SAMPLING_REPS = 3  # each takes >= 0.2 s of deliberate waiting


# -- children ----------------------------------------------------------------------------------


def spawn(argv: list[str], count: int, into: list[subprocess.Popen[bytes]]) -> None:
    """Start ``count`` children, appending each to ``into`` at once so ``finally`` reaps it."""
    for _ in range(count):
        into.append(
            subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # own session: own autogroup, own process group
            )
        )


def reap(children: list[subprocess.Popen[bytes]]) -> None:
    """Kill each child's process group and wait for it; only ever groups we created."""
    for child in children:
        # Not yet waited for, so its pid (= its pgid: start_new_session) cannot have been
        # reused; a group whose leader already exited but is unreaped is still ours.
        if child.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
    for child in children:
        child.wait()
    children.clear()


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: children get reaped


# -- timing ------------------------------------------------------------------------------------


def ten_rules() -> tuple[Rule, ...]:
    """DEFAULT_RULES plus variants, up to 10 (the figure the tracker asks about)."""
    rules = list(DEFAULT_RULES)
    variants = [
        ("infinite_loop", {"cpu_percent_min": 80.0, "duration_seconds": 900}),
        ("hung_test", {"age_hours": 8, "cpu_percent_max": 1.0}),
        ("orphaned_monitor", {"age_hours": 48, "cpu_percent_max": 0.5}),
    ]
    by_name = {r.name: r for r in DEFAULT_RULES}
    for name, change in variants:
        if len(rules) >= 10:
            break
        base = by_name[name]
        conditions = RuleConditions(**{**base.conditions.model_dump(), **change})
        rules.append(base.model_copy(update={"name": f"{name}_v2", "conditions": conditions}))
    return tuple(rules)


def interleaved(actions: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median ms per action, the actions taking turns within each round."""
    for action in actions.values():
        action()  # warm-up: boot time, uid names, psutil's process cache, page cache
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(reps):
        for name, action in actions.items():
            start = time.perf_counter()
            action()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(reps: int, rules: tuple[Rule, ...]) -> tuple[dict[str, float], int, int]:
    """(median ms per method, processes in the table, findings) under current conditions."""
    reader = ProcfsReader()
    factory = LocalTransportFactory(reader=reader)
    transport = factory.open(HOST)
    detector = Detector(rules)
    settings = SafetySettings()
    snapshot = reader.read().processes
    # The rules see CPU% and history as in a daemon: annotate once more after a real interval.
    transport.list_processes()
    listed: list[ProcessInfo] = list(transport.list_processes().processes)
    findings = [0]

    def local_scan() -> None:
        processes = transport.list_processes().processes
        policy = policy_for(settings, transport.vantage(), processes)
        found = detector.evaluate(
            processes, now=datetime.now(UTC), host_id=HOST.host_id, policy=policy
        )
        findings[0] = len(found)

    def rules_only() -> None:
        detector.evaluate(listed, now=datetime.now(UTC), host_id=HOST.host_id)

    def with_psutil() -> None:
        for proc in psutil.process_iter(PSUTIL_ATTRS):
            _ = proc.info

    def with_ps() -> None:
        subprocess.run(PS_COMMAND, capture_output=True, check=True)

    try:
        results = interleaved(
            {
                "procfs read": reader.read,
                "procfs read, cold": lambda: ProcfsReader().read(),
                "local scan": local_scan,
                "rules only": rules_only,
                "psutil": with_psutil,
                "ps": with_ps,
            },
            reps,
        )
        # A first scan: no CPU history, so it reads twice 0.2 s apart (agents/cpu_sampler.py).
        sampling: list[float] = []
        for _ in range(SAMPLING_REPS):
            fresh = LocalTransportFactory(reader=reader).open(HOST)
            start = time.perf_counter()
            fresh.list_processes()
            sampling.append((time.perf_counter() - start) * 1000)
        results["sampling scan"] = statistics.median(sampling)
    finally:
        factory.close()
    return results, len(snapshot), findings[0]


@contextmanager
def boosted(nice: int) -> Iterator[BoostResult]:
    # The autogroup belongs to the session we were started from (the shell): put it back.
    result = boost_own_cpu_share(nice=nice)
    try:
        yield result
    finally:
        restore_cpu_share(result)


# -- report ------------------------------------------------------------------------------------

ORDER = [
    "procfs read",
    "procfs read, cold",
    "local scan",
    "rules only",
    "psutil",
    "ps",
    "sampling scan",
]


def per_k(results: dict[str, float], count: int) -> dict[str, float]:
    return {name: ms * 1000 / count for name, ms in results.items()}


def table(title: str, results: dict[str, float], count: int) -> list[str]:
    norm = per_k(results, count)
    lines = [
        f"**{title}** ({count} processes in the table)",
        "",
        "| method | median ms | ms / 1000 procs | µs / proc | ÷ psutil | ÷ ps |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ORDER:
        if name not in results:
            continue
        lines.append(
            f"| {name} | {results[name]:.1f} | {norm[name]:.1f} | {norm[name]:.1f} "
            f"| {norm[name] / norm['psutil']:.2f} | {norm[name] / norm['ps']:.2f} |"
        )
    return [*lines, ""]


def boost_table(plain: dict[str, float], boost: dict[str, float]) -> list[str]:
    lines = [
        "**Effect of boost_own_cpu_share under the busy loops** (same table, same run)",
        "",
        "| method | unboosted ms | boosted ms | boosted ÷ unboosted |",
        "|---|---:|---:|---:|",
    ]
    for name in ORDER:
        if name in plain and name in boost:
            lines.append(
                f"| {name} | {plain[name]:.1f} | {boost[name]:.1f} "
                f"| {boost[name] / plain[name]:.2f} |"
            )
    return [*lines, ""]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        autogroup = Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        autogroup = "no autogroup"
    return f"{os.cpu_count()} CPUs ({model}), Linux {os.uname().release}, {autogroup}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, default=1000, help="idle children to spawn")
    parser.add_argument("--busy", type=int, default=20, help="busy loops for the loaded runs")
    parser.add_argument("--reps", type=int, default=7, help="timed rounds per condition")
    parser.add_argument("--nice", type=int, default=-10, help="nice for the boosted runs")
    args = parser.parse_args()

    # The readers log every vanished process at debug level; rendering those would be timed.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    signal.signal(signal.SIGHUP, _exit_on_sigterm)
    rules = ten_rules()
    started = time.perf_counter()
    build_ms = min(_time_ms(lambda: Detector(rules)) for _ in range(5))
    out = [f"machine: {machine()}", f"rules: {len(rules)}, reps: {args.reps}", ""]
    children: list[subprocess.Popen[bytes]] = []
    busy: list[subprocess.Popen[bytes]] = []
    boost: BoostResult | None = None
    try:
        spawn([SLEEP, "600"], args.procs, children)
        # A daemon's table is mostly older than this; the reader remembers the uid of such
        # processes between reads. The cold row shows a first read without that memory.
        time.sleep(EUID_SETTLED_SECONDS)
        idle, count, found = measure(args.reps, rules)
        out += table(f"Idle machine, {args.procs} extra sleeping processes", idle, count)
        rss_after_scans = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        loaded: dict[str, float] | None = None
        if args.busy > 0:
            spawn([BASH, "-c", "while :; do :; done"], args.busy, busy)
            time.sleep(1.0)  # let the loops reach the run queues
            loaded, loaded_count, _ = measure(args.reps, rules)
            out += table(f"Under {args.busy} busy loops, not boosted", loaded, loaded_count)
            with boosted(args.nice) as boost:
                if boost.boosted:
                    boosted_results, boosted_count, _ = measure(args.reps, rules)
                    title = f"Under {args.busy} busy loops, boosted (nice {args.nice})"
                    out += table(title, boosted_results, boosted_count)
                    out += boost_table(loaded, boosted_results)
    finally:
        reap(busy)
        reap(children)

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    norm = per_k(idle, count)
    out += [
        f"rule evaluation: {len(rules)} rules, {idle['rules only']:.2f} ms for {count} "
        f"processes ({norm['rules only']:.2f} µs/process); detector build {build_ms:.2f} ms; "
        f"findings in the local scan: {found}",
        f"peak RSS: {rss_after_scans / 1024:.1f} MiB after the idle-table scans, "
        f"{peak_kb / 1024:.1f} MiB at the end (includes psutil's process cache)",
    ]
    if boost is not None:
        out.append(f"boost: succeeded={list(boost.succeeded)} reason={boost.reason}")
        for step in boost.steps:
            out.append(
                f"  {step.mechanism}: {step.outcome} {step.previous} -> {step.new}"
                + (f" ({step.reason})" if step.reason else "")
            )
    out.append(f"total bench time: {time.perf_counter() - started:.0f} s")
    print("\n".join(out))


def _time_ms(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()
