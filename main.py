"""Reaper demo: one mission over a simulated lab, with every part of fleet mode in one process.

In-memory task queue, event bus and mission store; an Overseer; a MissionEngine with the
rule-based planner; Linux, macOS and Windows agents on their own threads, reaching simulated
hosts whose process tables come from fixtures (seed 000's incident among them). Progress is
printed as results arrive; the demo ends when the mission does and prints a per-host table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NoReturn

from agents.simulation import SimulatedLab
from agents.transports.base import TransportFactory
from agents.transports.local import LocalTransportFactory, this_os
from infra.logging import configure_logging
from overseer.bootstrap import in_memory_fleet
from overseer.inventory import load_inventory
from overseer.mission_view import render_table
from reaper_engine.engine import EngineNotice
from reaper_engine.errors import ConfigError
from reaper_engine.models import (
    HostSpec,
    MissionKind,
    MissionOptions,
    TransportKind,
)

DEFAULT_INVENTORY = Path(__file__).resolve().parent / "examples" / "lab.toml"

EXIT_OK, EXIT_MISSION_FAILED, EXIT_TIMEOUT, EXIT_BAD_INPUT = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse's own code is 2, which is this program's "timed out": a bad option is
        # bad input.
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(
        prog="python main.py",
        description="Run one Reaper mission over a simulated lab, in memory, and show the "
        "outcome per host. This machine is scanned too, in dry run: no process of yours is "
        "ever signalled.",
        epilog="Exit codes: 0 mission completed, 1 mission failed (every host failed), "
        "2 timed out, 3 invalid inventory or options.",
    )
    parser.add_argument(
        "--inventory",
        type=Path,
        default=DEFAULT_INVENTORY,
        help="inventory TOML file (default: examples/lab.toml)",
    )
    parser.add_argument(
        "--kind",
        choices=[k.value for k in MissionKind],
        default="reap",
        help="audit: discover and scan only; reap: also kill and verify (default: reap)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="decide and audit every kill, send no signal"
    )
    parser.add_argument(
        "--no-local",
        dest="local",
        action="store_false",
        help="leave this machine out (by default it joins the mission as host "
        "'this-machine', always in dry run: scanned for real, never signalled)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="give up waiting for the mission after this many seconds (default: 30)",
    )
    parser.add_argument(
        "--task-timeout",
        type=float,
        default=10.0,
        help="deadline of each task in seconds (default: 10)",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=0.2,
        help="first retry delay in seconds, doubled per attempt (default: 0.2)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final table")
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        default="console",
        help="format of the log on stderr (default: console)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="log every event to stderr (default: critical only; progress lines show the rest)",
    )
    return parser.parse_args(argv)


class Progress:
    """Prints one line per result, lock and host outcome, as the engine reports them."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.monotonic()

    def __call__(self, notice: EngineNotice) -> None:
        if self.quiet or notice.kind == "dispatched":
            return
        elapsed = time.monotonic() - self.started
        marks = {
            "applied": "·",
            "host_locked": "LOCKED",
            "host_done": "done",
            "mission_finished": "MISSION",
        }
        host = notice.host_id or "-"
        print(
            f"{elapsed:6.2f}s  {host:<13} {marks.get(notice.kind, notice.kind):<7} {notice.detail}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Progress lines already show every outcome, failures included; the log adds detail only
    # when asked for. "critical", not "error": the seed rules log each kill at their own
    # log_level (infinite_loop's is "error"), which on a clean run reads like a failure.
    configure_logging(args.log_format, "info" if args.verbose else "critical")
    try:
        inventory = load_inventory(args.inventory)
        options = MissionOptions(
            dry_run=args.dry_run,
            task_timeout_seconds=args.task_timeout,
            retry_backoff_seconds=args.backoff,
        )
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

    lab = SimulatedLab(base_dir=args.inventory.resolve().parent)
    hosts = list(inventory.hosts)
    if args.local:
        hosts.append(
            HostSpec(
                host_id="this-machine",
                os=this_os(),
                transport=TransportKind.LOCAL,
                dry_run=True,
                tags=("demo",),
            )
        )
    local = LocalTransportFactory()
    progress = Progress(args.quiet)
    transports: dict[TransportKind, TransportFactory] = {
        TransportKind.SIMULATED: lab,
        TransportKind.LOCAL: local,
    }
    with in_memory_fleet(transports, listener=progress) as fleet:
        try:
            state = fleet.overseer.create_mission(args.kind, hosts, options)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not args.quiet:
            mode = " (dry run)" if args.dry_run else ""
            print(
                f"mission {state.mission_id}: {args.kind}{mode} over {len(state.hosts)} hosts "
                f"of {inventory.name}",
                flush=True,
            )
        final = fleet.overseer.wait_for(state.mission_id, timeout=args.timeout)
    local.close()

    print()
    print(
        f"mission {final.mission_id} {final.status.value} in "
        f"{time.monotonic() - progress.started:.2f}s: "
        f"{final.counters.findings} findings, {final.counters.kills} killed, "
        f"{final.counters.kill_failures} failed kills, {final.counters.retries} retries"
    )
    print(render_table(final))
    if not final.status.is_terminal:
        print(f"error: mission still {final.status.value} after {args.timeout:g}s", file=sys.stderr)
        return EXIT_TIMEOUT
    return EXIT_MISSION_FAILED if final.status.value == "failed" else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
