"""Cold start of the ``reaper`` command line, beside two interpreter baselines.

Usage: .venv/bin/python bench/bench_startup.py [--runs 11]

Each command runs in a fresh interpreter (a new process every time), the commands taking turns
within each round so that the machine's noise lands on all of them alike; the figure is the
median wall time from spawn to exit. Baselines from the same run: ``python -c pass`` (the
interpreter alone) and ``python -c "import pydantic"`` (the model library every engine module
needs). The figures to compare between runs are the ratios to those baselines.

``reaper scan --json`` runs with the default configuration (HOME is a temporary directory, so
no user or project file is read): its one-shot CPU sample waits ``scanner.cpu_sample_seconds``
(0.25 s). A second variant sets it to 0.05 s to show what the rest of a scan costs. Nothing is
ever signalled: only ``--help`` and ``scan`` run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
REAPER = str(Path(PYTHON).with_name("reaper"))
GOAL_MS = 250.0


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    return (time.perf_counter() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    if not Path(REAPER).exists():
        print(f"no console script at {REAPER}: run `.venv/bin/pip install -e .` first")
        return 2

    with tempfile.TemporaryDirectory(prefix="reaper-bench-") as tmp:
        home = Path(tmp)
        env = {**os.environ, "HOME": tmp, "XDG_CONFIG_HOME": f"{tmp}/.config"}
        env.pop("REAPER_CONFIG", None)
        fast = home / "fast.toml"
        fast.write_text("[scanner]\ncpu_sample_seconds = 0.05\n")
        commands: dict[str, list[str]] = {
            "python -c pass": [PYTHON, "-c", "pass"],
            'python -c "import pydantic"': [PYTHON, "-c", "import pydantic"],
            "reaper --help": [REAPER, "--help"],
            "reaper scan --json": [REAPER, "scan", "--json"],
            "reaper scan --json (cpu_sample_seconds = 0.05)": [
                REAPER,
                "scan",
                "--json",
                "--config",
                str(fast),
            ],
        }
        os.chdir(tmp)  # no .reaper.toml above a temporary directory
        for argv in commands.values():  # warm the page cache once
            timed(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(timed(argv, env))

    medians = {name: statistics.median(values) for name, values in samples.items()}
    bare = medians["python -c pass"]
    pyd = medians['python -c "import pydantic"']
    print(f"{args.runs} runs each, median wall time of a fresh process (ms)\n")
    print("| command | median ms | min ms | ÷ python -c pass | ÷ import pydantic |")
    print("|---|---:|---:|---:|---:|")
    for name, median in medians.items():
        print(
            f"| `{name}` | {median:.0f} | {min(samples[name]):.0f} | "
            f"{median / bare:.1f} | {median / pyd:.2f} |"
        )
    scan = medians["reaper scan --json"]
    verdict = "met" if scan <= GOAL_MS else "NOT met"
    print(f"\nGoal: a whole `reaper scan` in <= {GOAL_MS:.0f} ms: {verdict} ({scan:.0f} ms).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
