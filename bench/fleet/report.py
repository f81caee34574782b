"""The report: rates, the Markdown tables of each section, the machine it ran on."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def events_table(
    hosts: int, results: dict[str, dict[str, float]], state_bytes: int, reps: int
) -> list[str]:
    events = 2 * hosts
    raw_name = next(n for n in results if n.startswith("raw"))
    raw = rate(events, results[raw_name]["total"])
    lines = [
        f"**Result events applied, mission of {hosts} hosts** ({events} events: {hosts} discover "
        f"results, each dispatching a scan, then {hosts} scan results; state at the end "
        f"{state_bytes / 1024:.0f} KiB of JSON; medians of {reps} rounds; garbage collector "
        "tuned as reaper engine's, infra.gc_tuning.tune_gc)",
        "",
        "| method | median ms | events/s | discover phase ev/s | scan phase ev/s | ÷ raw |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, parts in results.items():
        phases = [parts[k] for k in parts if k != "total"]
        total = rate(events, parts["total"])
        lines.append(
            f"| {name} | {parts['total'] * 1000:.1f} | {total:,.0f} "
            f"| {rate(hosts, phases[0]):,.0f} | {rate(hosts, phases[1]):,.0f} | {total / raw:.3f} |"
        )
    return [*lines, ""]


def breakdown_table(hosts: int, totals: dict[str, float], events: int) -> list[str]:
    drain_s = totals["drain"]
    server_s = totals.get("redis_cpu", 0.0)
    names = {
        "RedisMissionStore.load": "store.load: HGETALL its parts (MULTI) + decode the MissionState",
        "RedisMissionStore.save": "store.save: encode changed hosts and tasks + summary, Lua CAS",
        "RqTaskQueue.publish_many": "queue.publish_many: sign + enqueue the scans (Lua)",
        "RedisStreamEventBus.read": "bus.read: XREADGROUP (+ XINFO GROUPS) + decode events",
        "RedisStreamEventBus.ack": "bus.ack: XACK",
    }
    lines = [
        f"**Where one Redis engine's time goes, {hosts} hosts** (one run, each port call timed)",
        "",
        "| part | ms | µs / event | share |",
        "|---|---:|---:|---:|",
    ]
    rest = drain_s
    for key, label in names.items():
        seconds = totals.get(key, 0.0)
        rest -= seconds
        lines.append(
            f"| {label} | {seconds * 1000:.1f} | {seconds * 1e6 / events:.0f} "
            f"| {seconds / drain_s:.0%} |"
        )
    lines.append(
        f"| engine logic: apply, plan, settle (the rest) | {rest * 1000:.1f} "
        f"| {rest * 1e6 / events:.0f} | {rest / drain_s:.0%} |"
    )
    lines.append(f"| **total** | {drain_s * 1000:.1f} | {drain_s * 1e6 / events:.0f} | 100% |")
    lines.append(
        f"| of which the Redis server's CPU (inside the port calls above) "
        f"| {server_s * 1000:.1f} | {server_s * 1e6 / events:.0f} | {server_s / drain_s:.0%} |"
    )
    return [*lines, ""]


def simple_table(
    title: str, unit: str, count: int, results: dict[str, dict[str, float]], base: str
) -> list[str]:
    lines = [
        title,
        "",
        f"| method | median ms | {unit}/s | ÷ {base} |",
        "|---|---:|---:|---:|",
    ]
    base_rate = rate(count, results[base]["total"])
    for name, parts in results.items():
        per_s = rate(count, parts["total"])
        lines.append(
            f"| {name} | {parts['total'] * 1000:.1f} | {per_s:,.0f} | {per_s / base_rate:.3f} |"
        )
    return [*lines, ""]


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs ({model}), Linux {os.uname().release}, load {load}"
