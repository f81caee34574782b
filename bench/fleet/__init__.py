"""The parts of ``bench/bench_fleet.py``, one concept a module.

``redis_child`` (the benchmark's own redis-server), ``missions`` (the simulated hosts, tasks
and agent results), ``rounds`` (the methods taking turns, medians), ``logs`` (the logging the
engine runs with), ``events``, ``dispatch`` and ``workers`` (the three sections), ``report``
(the tables). Imported as ``fleet`` with ``bench/`` on ``sys.path``, as it is when the script
runs: the worker benchmark's no-op job is enqueued as ``fleet.workers.noop``.
"""
