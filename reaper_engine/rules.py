"""Detection rules: the model of a rule and the defaults (seed 000, plus JS test runners)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reaper_engine.models import Priority, ProcessState
from reaper_engine.patterns import Regexes
from reaper_engine.signals import Signal


class RuleConditions(BaseModel):
    """Every condition that is set must hold. Patterns are regexes over the full command line."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cpu_percent_min: float | None = Field(default=None, ge=0)
    cpu_percent_max: float | None = Field(default=None, ge=0)
    duration_seconds: float | None = Field(default=None, ge=0)
    age_seconds: float | None = Field(default=None, ge=0)
    age_hours: float | None = Field(default=None, ge=0)
    memory_mb_min: float | None = Field(default=None, ge=0)
    idle_seconds: float | None = Field(default=None, gt=0)  # no CPU progress for this long
    command_patterns: Regexes = ()
    exclude_patterns: Regexes = ()
    states: tuple[ProcessState, ...] = ()
    users: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_age(self) -> RuleConditions:
        if self.age_seconds is not None and self.age_hours is not None:
            raise ValueError("set age_seconds or age_hours, not both")
        return self

    @property
    def selects(self) -> bool:
        """True if at least one condition narrows the selection (exclusions alone do not)."""
        return bool(
            self.command_patterns
            or self.states
            or self.users
            or any(
                v is not None
                for v in (
                    self.cpu_percent_min,
                    self.cpu_percent_max,
                    self.duration_seconds,
                    self.age_seconds,
                    self.age_hours,
                    self.memory_mb_min,
                    self.idle_seconds,
                )
            )
        )

    @property
    def min_age_seconds(self) -> float | None:
        if self.age_hours is not None:
            return self.age_hours * 3600
        return self.age_seconds


class RuleAction(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    type: Literal["kill", "report"] = "kill"
    signal: Signal = Signal.SIGTERM
    timeout_seconds: float = Field(default=5.0, ge=0, le=600)
    fallback_signal: Signal | None = Signal.SIGKILL
    notify: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    scope: Literal["process", "group", "tree"] = "process"

    @field_validator("signal", "fallback_signal", mode="before")
    @classmethod
    def _parse_signal(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, bool):
            raise ValueError("a signal is a name like 'SIGTERM' or a number like 15")
        if (
            info.field_name == "fallback_signal"
            and isinstance(value, str)
            and value.strip().lower() == "none"
        ):
            return None  # TOML has no null: "none" is how a file says "no fallback"
        return Signal.parse(value) if isinstance(value, str | int) else value


RESERVED_RULE_NAMES = frozenset({"manual"})
"""Names the reaper gives its own decisions; a configured rule may not take them."""


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    enabled: bool = True
    priority: Priority = Priority.MEDIUM
    description: str = ""
    conditions: RuleConditions = Field(default_factory=RuleConditions)
    action: RuleAction = Field(default_factory=RuleAction)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name in RESERVED_RULE_NAMES:
            raise ValueError(f"'{name}' is reserved (explicit `reaper kill PID` requests)")
        return name

    @model_validator(mode="after")
    def _must_select(self) -> Rule:
        # A rule without conditions would select every process on the host.
        if not self.conditions.selects:
            raise ValueError(
                f"rule '{self.name}' has no condition: it would select every process "
                "(set at least one of the [rules.conditions] keys; to match everything on "
                "purpose, say so, e.g. age_seconds = 0)"
            )
        return self


# Things that legitimately run hot or long: compilers, build tools, browsers, editors, IDEs.
# Case-insensitive: Windows and macOS spell them Code.exe, Safari, Google Chrome.
_BUSY_BY_DESIGN = (
    r"(?i)(^|[/\\])(rustc|cc1|cc1plus|clang|gcc|g\+\+|ld|lld|javac|go|swiftc|tsc|esbuild"
    r"|cl|link|msbuild)(\.exe)?(\s|$)",
    r"(?i)(^|[/\\])cargo(\.exe)? (build|check|clippy)\b",
    r"(?i)(^|[/\\])(chrome|chromium|google chrome|firefox|msedge|safari)(\.exe)?(\s|$)",
    r"(?i)(^|[/\\])(code|cursor|vim|nvim|emacs|idea|pycharm|clion|devenv|xcode)(\.exe)?(\s|$)",
)
# Log monitors are the orphaned_monitor rule's, even when the log's name contains "_test".
_MONITORS = r"^(\S*[/\\])?(tail|less|watch)(\.exe)?\s"

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        name="infinite_loop",
        priority=Priority.CRITICAL,
        description="Process consuming >90% CPU for >5 minutes",
        conditions=RuleConditions(
            cpu_percent_min=90.0, duration_seconds=300, exclude_patterns=_BUSY_BY_DESIGN
        ),
        action=RuleAction(
            signal=Signal.SIGKILL, fallback_signal=None, notify=True, log_level="error"
        ),
    ),
    Rule(
        name="zombie_test_binary",
        priority=Priority.CRITICAL,
        description="/tmp/test_* binaries running >1 hour",  # noqa: S108 - a pattern, not a path
        conditions=RuleConditions(
            age_hours=1, command_patterns=(r"^/tmp/test_", r"^/tmp/.*_test$")
        ),
        action=RuleAction(
            signal=Signal.SIGKILL, fallback_signal=None, notify=True, log_level="error"
        ),
    ),
    Rule(
        name="hung_test",
        priority=Priority.HIGH,
        description="Test process older than 4 hours using <5% CPU",
        conditions=RuleConditions(
            age_hours=4,
            cpu_percent_max=5.0,
            command_patterns=(
                "cargo-nextest",
                "cargo test",
                r".*_test.*",
                r"test_.*",
                "proptest",
                r"mutation.*test",
            ),
            exclude_patterns=(*_BUSY_BY_DESIGN, _MONITORS),
        ),
        action=RuleAction(signal=Signal.SIGTERM, timeout_seconds=5, notify=True),
    ),
    Rule(
        name="vitest_timeout",
        priority=Priority.HIGH,
        description="vitest running longer than 5 minutes",
        conditions=RuleConditions(
            age_seconds=300, command_patterns=(r"(^|[/\\\s])vitest(\.mjs)?(\s|$)",)
        ),
        action=RuleAction(signal=Signal.SIGTERM, timeout_seconds=5),
    ),
    Rule(
        name="jest_timeout",
        priority=Priority.HIGH,
        description="jest or npm test running longer than 10 minutes",
        conditions=RuleConditions(
            age_seconds=600,
            command_patterns=(r"(^|[/\\\s])jest(\.js)?(\s|$)", r"\bnpm(\.cmd)? test\b"),
        ),
        action=RuleAction(signal=Signal.SIGTERM, timeout_seconds=5),
    ),
    Rule(
        name="memory_hog",
        priority=Priority.MEDIUM,
        description="Any process holding more than 10 GB of memory (reported, not killed)",
        conditions=RuleConditions(memory_mb_min=10240, exclude_patterns=_BUSY_BY_DESIGN),
        # Databases and VMs legitimately hold this much: report, let a person decide.
        action=RuleAction(type="report", signal=Signal.SIGTERM, timeout_seconds=10),
    ),
    Rule(
        name="orphaned_monitor",
        priority=Priority.LOW,
        description="tail -f, watch or log monitors older than 24 hours at ~0% CPU",
        conditions=RuleConditions(
            age_hours=24,
            cpu_percent_max=1.0,
            command_patterns=(
                r"^(\S*/)?tail -f",
                r"^(\S*/)?watch ",
                r"\.log$",
                r"Get-Content .*-Wait",
            ),
        ),
        action=RuleAction(signal=Signal.SIGTERM, log_level="info"),
    ),
)
