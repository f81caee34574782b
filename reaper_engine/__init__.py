"""Reaper's domain: models, the mission engine, planners, detection rules and safety policy.

This package is pure: it performs no I/O and imports nothing else from the project.
"""

SCHEMA_VERSION = 1
"""Version of the JSON documents (tasks, results, mission state) other processes read."""
