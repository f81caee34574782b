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

ExcludePreset = Literal["compilers", "browsers", "editors", "ides"]


class RuleConditions(BaseModel):
    """Every condition that is set must hold. Patterns are regexes over the full command line."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    cpu_percent_min: float | None = Field(default=None, ge=0)
    cpu_percent_max: float | None = Field(default=None, ge=0)
    # The window over which cpu_percent_min must hold on average; needs cpu_percent_min.
    duration_seconds: float | None = Field(default=None, ge=0)
    # The average since the process started: cpu_time / age (100 = one core).
    lifetime_cpu_percent_min: float | None = Field(default=None, ge=0)
    lifetime_cpu_percent_max: float | None = Field(default=None, ge=0)
    age_seconds: float | None = Field(default=None, ge=0)
    age_hours: float | None = Field(default=None, ge=0)
    memory_mb_min: float | None = Field(default=None, ge=0)
    memory_mb_max: float | None = Field(default=None, ge=0)
    idle_seconds: float | None = Field(default=None, gt=0)  # no CPU progress for this long
    command_patterns: Regexes = ()
    exclude_patterns: Regexes = ()
    # Named, built-in exclusion sets (EXCLUDE_PRESETS): what a config file can say in a word
    # instead of copying several long regexes that would then never get Reaper's fixes.
    exclude_presets: tuple[ExcludePreset, ...] = ()
    states: tuple[ProcessState, ...] = ()
    users: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_age(self) -> RuleConditions:
        if self.age_seconds is not None and self.age_hours is not None:
            raise ValueError("set age_seconds or age_hours, not both")
        return self

    @model_validator(mode="after")
    def _duration_needs_a_minimum(self) -> RuleConditions:
        # On its own a window says nothing about the process: such a rule would select
        # every process. (Say lifetime_cpu_percent_min for a load since the start.)
        if self.duration_seconds is not None and self.cpu_percent_min is None:
            raise ValueError(
                "duration_seconds needs cpu_percent_min: it is the window over which that "
                "CPU% must be sustained"
            )
        return self

    @property
    def selects(self) -> bool:
        """True if at least one condition narrows the selection (exclusions alone do not;
        nor does ``duration_seconds``, which only qualifies ``cpu_percent_min``)."""
        return bool(
            self.command_patterns
            or self.states
            or self.users
            or any(
                v is not None
                for v in (
                    self.cpu_percent_min,
                    self.cpu_percent_max,
                    self.lifetime_cpu_percent_min,
                    self.lifetime_cpu_percent_max,
                    self.age_seconds,
                    self.age_hours,
                    self.memory_mb_min,
                    self.memory_mb_max,
                    self.idle_seconds,
                )
            )
        )

    @property
    def all_exclusions(self) -> tuple[str, ...]:
        """``exclude_patterns`` and then the patterns of every preset named."""
        presets = tuple(p for name in self.exclude_presets for p in EXCLUDE_PRESETS[name])
        return (*self.exclude_patterns, *presets)

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


# Things that legitimately run hot, long or big: compilers, build tools, browsers, editors and
# IDEs. Each pattern is anchored on the program that runs (the command line's first word, or
# the JVM's main class), by its basename: an argument naming a compiler does not hide a
# process, nor does a name that merely contains one (/tmp/test_gcc_parser, cargo-nextest).
# Case-insensitive: Windows and macOS spell them Code.exe, Safari, Google Chrome.
#
# The program's directory: no spaces (relative or absolute), or an absolute path whose
# directory names may hold single spaces not followed by "-" ("/Applications/Google
# Chrome.app/...", "C:\Program Files\..."), optionally in Windows quotes.
# (Possessive and atomic: a name is never backtracked into, so a long line costs linear time.)
_DIR = (
    r'(?:(?:[^\s"/\\]*+[/\\])*'
    r'|(?:/|[a-z]:[/\\])(?:(?>[^\s"/\\]++(?: [^\s"/\\-][^\s"/\\]*+)*+)[/\\])*)'
)
_PROGRAM = r'(?i)^"?' + _DIR
# After the basename: a version (gcc-12, clang-17, go1.22.1, ghc-9.4.7, idea64), then .exe.
_VERSION = r"(?:-?\d[\w.]*)?"
_END = r'(?:\.exe)?"?(?:\s|$)'
# A cross-compiler's target triple: x86_64-linux-gnu-g++-12, arm-none-eabi-gcc.
_TRIPLE = (
    r"(?:(?:x86_64|i[3-6]86|aarch64|arm\w*|riscv\d+|mips\w*|powerpc\w*|ppc\w*|s390x"
    r"|loongarch64|wasm32|avr|xtensa\w*)-(?:\w+-){1,3})?"
)
# macOS GUI programs run helpers: "Google Chrome Helper (Renderer)", "Code Helper (GPU)".
_HELPER = r"(?: helper(?: \([^)\"]*\))?)?"

_COMPILERS = (
    _PROGRAM
    + _TRIPLE
    + r"(?:gcc|g\+\+|c\+\+|cc|cpp|cc1|cc1plus|cc1obj|collect2|lto1|lto-wrapper|as|ld|ld\.bfd"
    r"|ld\.gold|ld\.lld|ld64\.lld|lld|lld-link|mold|clang|clang\+\+|clang-cl|clangd|rustc"
    r"|rust-analyzer|javac|kotlinc|scalac|swiftc|swift-frontend|sourcekit-lsp|go|gopls|ghc"
    r"|tsc|esbuild|nvcc|gfortran|f951|zig|cl|link|csc|vbcscompiler|msbuild|xcodebuild)"
    + _VERSION
    + _END
)
# Go's toolchain runs $GOROOT/pkg/tool/<os>_<arch>/compile, link, asm ...
_GO_TOOLS = _PROGRAM + r"pkg[/\\]tool[/\\][^\s\"/\\]+[/\\](?:compile|link|asm|cgo|vet|cover)" + _END
_BUILDS = _PROGRAM + r'cargo(?:\.exe)?"? (?:\+\S+ )?(?:build|check|clippy|doc|rustc)\b'
# Build drivers: a long, hot `make -j` or Bazel server is a build, not a runaway.
_BUILD_TOOLS = (
    _PROGRAM + r"(?:make|gmake|ninja|samu|bazel|bazelisk|buck2|cmake|meson|scons|mvn|gradle"
    r"|gradlew|sbt)" + _VERSION + r"(?:\.cmd|\.bat)?" + _END
)
# Compilers and bundlers that run as a script under node: `node …/typescript/bin/tsc -w`.
_NODE_TOOLS = (
    _PROGRAM + r'node(?:js)?(?:\.exe)?"? (?:\S*[/\\])?(?:tsc|tsserver|webpack(?:-cli)?|esbuild'
    r"|vite|rollup|swc|babel|tsup)(?:\.c?m?js)?(?:\s|$)"
)
_BROWSERS = (
    _PROGRAM + r"(?:chrome|chromium|chromium-browser|google-chrome(?:-stable|-beta|-unstable)?"
    r"|google chrome|chrome_crashpad_handler|firefox|firefox-esr|firefox-bin|plugin-container"
    r"|msedge|msedgewebview2|microsoft-edge(?:-stable|-beta|-dev)?|microsoft edge|brave"
    r"|brave-browser|brave browser|opera|vivaldi|vivaldi-bin|safari|epiphany"
    r"|com\.apple\.webkit\.[\w.]+)" + _HELPER + _VERSION + _END
)
_EDITORS = (
    _PROGRAM
    + r"(?:vim|vi|nvim|gvim|mvim|neovide|emacs|emacsclient|nano|pico|micro|hx|helix|kak|jed"
    r"|mcedit|gedit|gnome-text-editor|kate|kwrite|mousepad|pluma|xed|geany|leafpad|featherpad"
    r"|textedit|bbedit|sublime_text|subl|sublime text(?: \d)?|zed|zed-editor|zeditor|code"
    r"|code-insiders|code-oss|code-server|codium|vscodium|cursor|windsurf|atom|notepad"
    r"|notepad\+\+|lapce)" + _HELPER + _VERSION + _END
)
_IDES = (
    _PROGRAM + r"(?:idea|pycharm|clion|goland|webstorm|phpstorm|rubymine|rider|datagrip|dataspell"
    r"|rustrover|aqua|studio|android-studio|jetbrains-toolbox|eclipse|netbeans|qtcreator"
    r"|kdevelop|codeblocks|devenv|xcode|sourcekitservice|servicehub\.[\w.]+)"
    + _VERSION
    + r"(?:\.sh)?"
    + _END
)
# IDEs and build daemons that run on a JVM: the program is java, the main class says which.
_JVM = _PROGRAM + r'javaw?(?:\.exe)?"? .*?[\s/\\:;]'
_JVM_IDES = (
    _JVM + r"(?:com\.intellij\.idea\.Main|org\.netbeans\.Main|org\.eclipse\.equinox\.launcher)"
)
_JVM_BUILDS = _JVM + (
    r"(?:org\.gradle\.launcher\.daemon\.bootstrap\.GradleDaemon"
    r"|org\.jetbrains\.kotlin\.daemon\.KotlinCompileDaemon"
    r"|com\.google\.devtools\.build\.lib\.bazel\.Bazel)"
)
# VS Code and its forks: every process of the macOS bundle (its main binary is "Electron"
# in some versions) and the remote server's node (.vscode-server/bin/<commit>/node).
_CODE_BUNDLE = (
    _PROGRAM + r"(?:visual studio code(?: - insiders)?|vscodium|cursor|windsurf)\.app[/\\]"
)
_CODE_SERVER = (
    r'(?i)^"?\S*?[/\\]\.(?:vscode|vscode-insiders|vscode-oss|cursor|windsurf)-server[/\\]'
)


EXCLUDE_PRESETS: dict[str, tuple[str, ...]] = {
    "compilers": (_COMPILERS, _GO_TOOLS, _BUILDS, _BUILD_TOOLS, _NODE_TOOLS, _JVM_BUILDS),
    "browsers": (_BROWSERS,),
    "editors": (_EDITORS, _CODE_BUNDLE, _CODE_SERVER),
    "ides": (_IDES, _JVM_IDES),
}
"""``exclude_presets`` names: programs that legitimately run hot, long or big."""

_BUSY_BY_DESIGN: tuple[ExcludePreset, ...] = ("compilers", "browsers", "editors", "ides")
# Log monitors are the orphaned_monitor rule's, even when the log's name contains "_test".
_MONITORS = r"^(\S*[/\\])?(tail|less|watch)(\.exe)?\s"

DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(
        name="infinite_loop",
        priority=Priority.CRITICAL,
        description="Process consuming >90% CPU for >5 minutes",
        conditions=RuleConditions(
            cpu_percent_min=90.0, duration_seconds=300, exclude_presets=_BUSY_BY_DESIGN
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
            age_hours=1,
            command_patterns=(r"^/tmp/test_", r"^/tmp/.*_test$"),
            exclude_presets=_BUSY_BY_DESIGN,
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
            exclude_patterns=(_MONITORS,),
            exclude_presets=_BUSY_BY_DESIGN,
        ),
        action=RuleAction(signal=Signal.SIGTERM, timeout_seconds=5, notify=True),
    ),
    Rule(
        name="vitest_timeout",
        priority=Priority.HIGH,
        description="vitest running longer than 5 minutes",
        conditions=RuleConditions(
            age_seconds=300,
            command_patterns=(r"(^|[/\\\s])vitest(\.mjs)?(\s|$)",),
            exclude_presets=_BUSY_BY_DESIGN,
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
            exclude_presets=_BUSY_BY_DESIGN,
        ),
        action=RuleAction(signal=Signal.SIGTERM, timeout_seconds=5),
    ),
    Rule(
        name="memory_hog",
        priority=Priority.MEDIUM,
        description="Any process holding more than 10 GB of memory (reported, not killed)",
        conditions=RuleConditions(memory_mb_min=10240, exclude_presets=_BUSY_BY_DESIGN),
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
            exclude_presets=_BUSY_BY_DESIGN,
        ),
        action=RuleAction(signal=Signal.SIGTERM, log_level="info"),
    ),
)
