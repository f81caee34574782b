"""Time ProcfsReader, PsutilReader and `ps` over the same, deliberately crowded, process table.

Usage: .venv/bin/python bench/bench_readers.py [--extra 1000] [--reps 7]

Spawns ``--extra`` idle children (``sleep 600`` in their own session) so that the table is
big enough to measure, and always kills and reaps them before exiting.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.platform import ProcfsReader, PsutilReader

# Absolute paths: the bench must not run whatever a writable PATH entry calls "ps".
PS_COMMAND = [shutil.which("ps") or "/bin/ps", "-eo", "pid,ppid,uid,etimes,times,pcpu,rss,args"]
SLEEP = shutil.which("sleep") or "/bin/sleep"


def spawn(count: int) -> list[subprocess.Popen[bytes]]:
    children: list[subprocess.Popen[bytes]] = []
    for _ in range(count):
        children.append(
            subprocess.Popen(
                [SLEEP, "600"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    return children


def reap(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.kill()
    for child in children:
        child.wait()


def median_ms(action: Callable[[], object], reps: int) -> float:
    action()  # warm-up: first-call caches (btime, uid names, psutil's process table)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def run_ps() -> None:
    subprocess.run(PS_COMMAND, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--extra", type=int, default=1000, help="idle children to spawn")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per reader")
    args = parser.parse_args()

    procfs, portable = ProcfsReader(), PsutilReader()
    # st_uid only: the reader the brief specified, without the status read for root-owned
    # processes that makes non-dumpable processes report their real owner.
    procfs_fast = ProcfsReader(exact_uid=False)
    children = spawn(args.extra)
    try:
        snapshot = procfs.read()
        count = len(snapshot.processes)
        per_k = 1000 / count
        results = {
            "procfs": median_ms(procfs.read, args.reps) * per_k,
            "procfs(st_uid only)": median_ms(procfs_fast.read, args.reps) * per_k,
            "psutil": median_ms(portable.read, args.reps) * per_k,
            "ps": median_ms(run_ps, args.reps) * per_k,
        }
        after = procfs.read()
    finally:
        reap(children)

    print(f"processes in table: {count} ({args.extra} spawned), reps: {args.reps}")
    print(f"skipped in last procfs read: {after.skipped or 'none'}")
    for name, value in results.items():
        print(f"  {name:20s} {value:8.1f} ms per 1000 processes (median)")
    print(f"  procfs/psutil = {results['procfs'] / results['psutil']:.2f}")
    print(f"  procfs/ps     = {results['procfs'] / results['ps']:.2f}")
    fast = results["procfs(st_uid only)"]
    print(f"  procfs(st_uid only)/psutil = {fast / results['psutil']:.2f}")
    print(f"  procfs(st_uid only)/ps     = {fast / results['ps']:.2f}")
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"peak RSS of this process: {peak_kb / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
