"""Fleet throughput on Redis: results one engine applies, tasks dispatched, tasks a worker runs.

Usage: .venv/bin/python bench/bench_fleet.py [--hosts 50,1000] [--reps 5] [--big-reps 3]
       [--tasks 2000] [--batch 100] [--jobs 200] [--no-aof] [--only events,dispatch,workers]
       [--quick]

Starts its own ``redis-server`` (a free loopback port, a temporary directory, AOF with fsync
every second as docker/compose.yaml runs it; ``--no-aof`` for none) and stops it in
``finally``, also on Ctrl-C and SIGTERM. Every figure is a median over ``--reps`` rounds
(``--big-reps`` for missions over 200 hosts, whose runs take seconds) in which the methods
take turns, so the machine's noise lands on all of them alike; the ratios to the raw
redis-py baselines of the same run are the figures to compare between runs. ~1-2 min with
the defaults on 2 cores.

1. **Result events applied by one engine**, for a mission of each ``--hosts`` size. An audit
   mission over simulated hosts (the lab's four process tables in turn) is started with
   ``MissionEngine.start_mission`` (its discover tasks dispatched), then, untimed, one
   success result per pending task is appended to the mission's stream, with the data the
   real agent reports for that table; timed: the engine draining them as its loop does,
   ``bus.read`` (batches of 500) -> ``handle_deliveries`` (one load-apply-save per batch,
   then XACK). Two phases: the discover results (each plans and dispatches a scan task),
   then the scan results (each settles its host; the last completes the mission): 2 x hosts
   events. Methods: in-memory ports; Redis ports (RedisStreamEventBus, RedisMissionStore,
   RqTaskQueue, as ``reaper engine`` wires them); the same plus ``tick()`` before each read,
   as ``run_event_loop`` does (``MissionEngine.step``: the batch then reuses the state the
   tick loaded); the same with ``reaper engine``'s default logging (INFO, JSON
   lines, here to /dev/null); and the baseline, raw redis-py: XADD of the same payloads,
   then XREADGROUP COUNT 500 + XACK until drained. Then one more Redis run with each port
   call timed, to show where an engine's time goes. This section runs with the garbage
   collector tuned as ``reaper engine`` tunes it once started (``infra.gc_tuning.tune_gc``),
   and restores Python's settings after it: the workers of section 3 keep the defaults.
2. **Tasks dispatched**: ``RqTaskQueue.publish_many`` (signed envelopes, dedupe guards) of
   ``--tasks`` scan tasks in calls of ``--batch``, beside plain rq ``Queue.enqueue_many`` of
   the same jobs (same envelopes, prepared beforehand) and a raw pipelined RPUSH of
   payloads of the same size, in the same batches.
3. **Tasks executed per worker**, burst mode, ``--jobs`` jobs: RQ's SimpleWorker and its
   forking Worker on a no-op function, the raw redis-py floor of a worker (LPOP + HGETALL +
   HSET per job), and ``reaper worker``'s own class (GuardedWorker, a SimpleWorker) running
   real signed scan tasks for a simulated host through ``agents.rq_job.run_task``, each
   result published to the stream.

The parts live in ``bench/fleet/``: the redis-server (``redis_child``), the mission
(``missions``), the rounds (``rounds``), the logging (``logs``), one module per section
(``events``, ``dispatch``, ``workers``) and the tables (``report``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

# The project, to import the code measured; bench/, this script's directory, is on sys.path
# already: ``fleet`` is the package of the benchmark's parts.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from fleet.dispatch import run_dispatch
from fleet.events import BIG_MISSION, run_events
from fleet.logs import LogSwitch
from fleet.redis_child import REDIS_SERVER, RedisChild, install_exit_handlers
from fleet.report import machine
from fleet.workers import run_workers

from infra.redis import connect
from reaper_engine.signing import TaskSigner

SECRET = b"bench-fleet-secret-0123456789abcdef"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="50,1000", help="mission sizes, comma-separated")
    parser.add_argument("--reps", type=int, default=5, help="timed rounds per measurement")
    parser.add_argument(
        "--big-reps",
        type=int,
        default=3,
        help=f"timed rounds for missions over {BIG_MISSION} hosts (a run takes seconds)",
    )
    parser.add_argument("--tasks", type=int, default=2000, help="tasks dispatched per round")
    parser.add_argument("--batch", type=int, default=100, help="tasks per publish call")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per worker run")
    parser.add_argument("--no-aof", action="store_true", help="redis-server without AOF")
    parser.add_argument(
        "--only", default="events,dispatch,workers", help="sections to run, comma-separated"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --hosts 20,200 --reps 3 --tasks 500 --jobs 60",
    )
    args = parser.parse_args()
    if REDIS_SERVER is None:
        print("no redis-server on PATH: install Redis (e.g. apt-get install redis-server)")
        return 2
    if args.quick:
        args.hosts, args.reps, args.big_reps, args.tasks, args.jobs = "20,200", 3, 3, 500, 60
    sections = set(args.only.split(","))
    install_exit_handlers()
    logs = LogSwitch()
    started = time.perf_counter()
    signer = TaskSigner(SECRET)
    server = RedisChild(Path(tempfile.mkdtemp(prefix="reaper-bench-fleet-")), aof=not args.no_aof)
    client: redis.Redis | None = None
    goals: list[str] = []
    try:
        server.start()
        client = connect(server.url)
        persistence = "no persistence" if args.no_aof else "AOF, fsync every second"
        print(
            f"machine: {machine()}\n"
            f"redis-server {server.server_version()} ({persistence}), "
            f"redis-py {redis.__version__}, rq {version('rq')}, "
            f"Python {sys.version.split()[0]}; reps {args.reps} (missions over {BIG_MISSION} "
            f"hosts: {args.big_reps})\n",
            flush=True,
        )
        if "events" in sections:
            out, found = run_events(args, client, signer, logs)
            goals += found
            print("\n".join(out), flush=True)
        if "dispatch" in sections:
            out, found = run_dispatch(args, client, signer)
            goals += found
            print("\n".join(out), flush=True)
        if "workers" in sections:
            print("\n".join(run_workers(args, client, server.url, signer)), flush=True)
    finally:
        if client is not None:
            client.close()
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
        logs.close()
    if goals:
        print("\n".join(["Goals:", *(f"* {g}" for g in goals), ""]))
    print(f"total bench time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
