"""Helpers of the detector tests (test_detector_*.py): time spans, and evaluating processes
under the default rules or a given rule set."""

from __future__ import annotations

from collections.abc import Sequence

from reaper_engine.detector import Detector
from reaper_engine.models import Finding, ProcessInfo
from reaper_engine.rules import DEFAULT_RULES, Rule
from reaper_engine.safety import SafetyPolicy
from tests.factories import T0

HOUR = 3600.0
DAY = 86400.0


def evaluate(
    *procs: ProcessInfo, rules: Sequence[Rule] = DEFAULT_RULES, policy: SafetyPolicy | None = None
) -> list[Finding]:
    return Detector(rules).evaluate(procs, now=T0, host_id="h1", policy=policy)


def rule_of(p: ProcessInfo) -> str | None:
    findings = evaluate(p)
    assert len(findings) <= 1
    return findings[0].rule if findings else None


def rule_of_with(rules: Sequence[Rule], p: ProcessInfo) -> str | None:
    findings = evaluate(p, rules=rules)
    return findings[0].rule if findings else None
