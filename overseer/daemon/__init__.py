"""The single-host daemon (issue 4, seeds 000 and 001): a watch loop that runs one reap
mission over this machine every ``daemon.scan_interval_seconds`` through the same engine and
agents as fleet mode, with a PID file, signal handling, persisted state, health checks and
Prometheus metrics. See docs/daemon.md.
"""
