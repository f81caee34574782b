"""reaper_engine/detector.py with the default rules of reaper_engine/rules.py."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.simulation import SimulatedLab, load_table
from agents.simulation.lab import _to_info
from reaper_engine.clock import ManualClock
from reaper_engine.detector import Detector, _check, _selects
from reaper_engine.models import OS, Finding, Priority, ProcessInfo, ProcessState
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleAction, RuleConditions
from reaper_engine.safety import SafetyPolicy, SafetySettings, Vantage
from reaper_engine.signals import Signal
from tests.factories import T0, host_spec, proc

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


def test_default_rules_are_the_documented_set() -> None:
    assert [r.name for r in DEFAULT_RULES] == [
        "infinite_loop",
        "zombie_test_binary",
        "hung_test",
        "vitest_timeout",
        "jest_timeout",
        "memory_hog",
        "orphaned_monitor",
    ]


# --- one test per default rule: a match and near misses -----------------------------------


def test_infinite_loop_matches_sustained_high_cpu() -> None:
    p = proc(cmd="/home/noah/bin/spinner --forever", cpu=99.9, age=18720)
    [finding] = evaluate(p)
    assert finding.rule == "infinite_loop"
    assert finding.priority is Priority.CRITICAL
    assert finding.killable
    assert finding.reason == "infinite_loop: CPU 99.9% for 5h 12m"
    assert finding.matched == (
        "cpu 99.9% >= 90%",
        "sustained 99.9% over its lifetime of 5h 12m (>= 90% for 5m 0s)",
        "command not excluded",
    )


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(proc(cmd="/home/noah/bin/spinner", cpu=89.9, age=18720), id="cpu-below-90"),
        pytest.param(proc(cmd="/home/noah/bin/spinner", cpu=99.9, age=299), id="age-below-5min"),
        pytest.param(
            # Spinning right now, but only just started to: lifetime average is 20%.
            proc(cmd="/home/noah/bin/spinner", cpu=99.9, age=3600, cpu_time=720),
            id="not-sustained",
        ),
    ],
)
def test_infinite_loop_near_misses(p: ProcessInfo) -> None:
    assert rule_of(p) is None


def test_infinite_loop_at_exact_thresholds() -> None:
    assert rule_of(proc(cmd="/home/noah/bin/spinner", cpu=90.0, age=300)) == "infinite_loop"


@pytest.mark.parametrize(
    ("cmd", "pattern"),
    [("/tmp/test_ch04_debug", "^/tmp/test_"), ("/tmp/build/parser_test", "^/tmp/.*_test$")],
)
def test_zombie_test_binary_matches_old_tmp_test_binaries(cmd: str, pattern: str) -> None:
    [finding] = evaluate(proc(cmd=cmd, cpu=0.5, age=HOUR))
    assert finding.rule == "zombie_test_binary"
    assert finding.priority is Priority.CRITICAL
    assert finding.killable
    assert finding.matched == (
        "age 1h 0m >= 1h 0m",
        f"command matches {pattern!r}",
        "command not excluded",
    )
    assert finding.reason == "zombie_test_binary: age 1h 0m, CPU 0.5%"


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(proc(cmd="/tmp/test_ch04_debug", age=HOUR - 1), id="younger-than-1h"),
        pytest.param(proc(cmd="/home/x/tmp/test_thing", age=2 * HOUR), id="not-under-/tmp"),
        pytest.param(proc(cmd="/tmp/parser_test.log", age=2 * HOUR), id="not-ending-_test"),
    ],
)
def test_zombie_test_binary_near_misses(p: ProcessInfo) -> None:
    assert rule_of(p) is None


@pytest.mark.parametrize(
    "cmd",
    [
        "cargo test --workspace",
        "/home/noah/.cargo/bin/cargo-nextest nextest run",
        "python3 -m pytest tests/test_sync.py",
        "pmat mutation test",
        "/srv/build/deps/parser_tests-5f1e2a",
        "cargo proptest",
    ],
)
def test_hung_test_matches_old_idle_test_processes(cmd: str) -> None:
    [finding] = evaluate(proc(cmd=cmd, cpu=0.2, age=4 * HOUR + 1))
    assert finding.rule == "hung_test"
    assert finding.priority is Priority.HIGH
    assert finding.reason.startswith("hung_test: age 4h 0m, CPU 0.2%")


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(proc(cmd="cargo test --workspace", cpu=0.2, age=4 * HOUR - 1), id="young"),
        pytest.param(proc(cmd="cargo test --workspace", cpu=5.1, age=5 * HOUR), id="busy"),
        pytest.param(proc(cmd="cargo bench", cpu=0.0, age=5 * HOUR), id="not-a-test"),
    ],
)
def test_hung_test_near_misses(p: ProcessInfo) -> None:
    assert rule_of(p) is None


def test_hung_test_at_exact_cpu_limit() -> None:
    assert rule_of(proc(cmd="cargo test", cpu=5.0, age=4 * HOUR)) == "hung_test"


@pytest.mark.parametrize(
    "cmd",
    [
        "node /home/dana/web/node_modules/.bin/vitest run",
        "vitest",
        "node C:\\web\\node_modules\\vitest\\vitest.mjs run",
    ],
)
def test_vitest_timeout(cmd: str) -> None:
    assert rule_of(proc(cmd=cmd, cpu=0.3, age=300)) == "vitest_timeout"
    assert rule_of(proc(cmd=cmd, cpu=0.3, age=299)) is None


def test_vitest_timeout_ignores_lookalikes() -> None:
    assert rule_of(proc(cmd="node /x/vitest-config-builder", age=HOUR)) is None


@pytest.mark.parametrize(
    "cmd",
    [
        "node /web/node_modules/jest/bin/jest.js --ci",
        "npx jest",
        "npm test",
        "C:\\Windows\\system32\\cmd.exe /c npm test",
        "npm.cmd test -- --watch=false",
    ],
)
def test_jest_timeout(cmd: str) -> None:
    [finding] = evaluate(proc(cmd=cmd, cpu=1.0, age=600))
    assert (finding.rule, finding.priority) == ("jest_timeout", Priority.HIGH)
    assert rule_of(proc(cmd=cmd, cpu=1.0, age=599)) is None


def test_jest_timeout_ignores_lookalikes() -> None:
    assert rule_of(proc(cmd="node jester.js", age=HOUR)) is None
    assert rule_of(proc(cmd="npm testify", age=HOUR)) is None


def test_memory_hog_reports_and_never_kills() -> None:
    [finding] = evaluate(proc(cmd="/usr/lib/postgresql/16/bin/postgres", cpu=4, rss_mb=10240))
    assert finding.rule == "memory_hog"
    assert finding.priority is Priority.MEDIUM
    assert finding.report_only
    assert not finding.killable
    assert finding.reason == "memory_hog: memory 10240 MB (age 1h 0m)"
    assert finding.matched == ("memory 10240 MB >= 10240 MB", "command not excluded")


def test_memory_hog_near_miss() -> None:
    assert rule_of(proc(cmd="/usr/lib/postgresql/16/bin/postgres", rss_mb=10239.5)) is None


@pytest.mark.parametrize(
    "cmd",
    [
        "tail -f /var/log/syslog",
        "/usr/bin/tail -f /home/noah/app.txt",
        "watch -n 5 kubectl get pods",
        "less /var/log/app.log",
        "powershell.exe -Command Get-Content C:\\logs\\nightly.log -Wait",
    ],
)
def test_orphaned_monitor(cmd: str) -> None:
    [finding] = evaluate(proc(cmd=cmd, cpu=0.0, age=DAY))
    assert (finding.rule, finding.priority) == ("orphaned_monitor", Priority.LOW)
    assert finding.killable


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(proc(cmd="tail -f /var/log/syslog", cpu=0.0, age=DAY - 1), id="young"),
        pytest.param(proc(cmd="tail -f /var/log/syslog", cpu=1.1, age=2 * DAY), id="busy"),
        pytest.param(proc(cmd="tail -n 20 /var/log/syslog", cpu=0.0, age=2 * DAY), id="no-follow"),
        pytest.param(proc(cmd="stopwatch", cpu=0.0, age=2 * DAY), id="watch-lookalike"),
    ],
)
def test_orphaned_monitor_near_misses(p: ProcessInfo) -> None:
    assert rule_of(p) is None


# --- priority order -----------------------------------------------------------------------


def test_critical_rule_wins_over_low_rule() -> None:
    # Matches zombie_test_binary (critical), hung_test (high) and orphaned_monitor (low).
    p = proc(cmd="/tmp/test_follow /var/log/app.log", cpu=0.0, age=2 * DAY)
    assert rule_of(p) == "zombie_test_binary"
    explained = {
        r.name: all(c.held for c in checks)
        for r, checks in Detector(DEFAULT_RULES).explain(p, now=T0)
    }
    assert explained["orphaned_monitor"]
    assert explained["hung_test"]


def test_priority_beats_the_order_rules_are_given_in() -> None:
    low = Rule(name="low_any", priority=Priority.LOW, conditions=RuleConditions(age_seconds=0))
    crit = Rule(
        name="crit_any", priority=Priority.CRITICAL, conditions=RuleConditions(age_seconds=0)
    )
    medium = Rule(name="medium_any", conditions=RuleConditions(age_seconds=0))
    detector = Detector([low, medium, crit])
    assert [r.name for r in detector.rules] == ["crit_any", "medium_any", "low_any"]
    assert rule_of_with([low, medium, crit], proc()) == "crit_any"


def rule_of_with(rules: Sequence[Rule], p: ProcessInfo) -> str | None:
    findings = evaluate(p, rules=rules)
    return findings[0].rule if findings else None


def test_same_priority_keeps_given_order() -> None:
    a = Rule(name="first", priority=Priority.HIGH, conditions=RuleConditions(age_seconds=0))
    b = Rule(name="second", priority=Priority.HIGH, conditions=RuleConditions(age_seconds=0))
    assert rule_of_with([a, b], proc()) == "first"
    assert rule_of_with([b, a], proc()) == "second"


def test_findings_are_sorted_most_urgent_first() -> None:
    monitor = proc(10, cmd="tail -f /var/log/x", age=2 * DAY)  # low
    hog = proc(11, cmd="/usr/bin/postgres", rss_mb=20000)  # medium
    hung = proc(12, cmd="cargo test", age=5 * HOUR)  # high
    spin = proc(13, cmd="/home/noah/spin", cpu=99.0, age=HOUR)  # critical
    findings = evaluate(monitor, hog, hung, spin)
    assert [(f.identity.pid, f.priority) for f in findings] == [
        (13, Priority.CRITICAL),
        (12, Priority.HIGH),
        (11, Priority.MEDIUM),
        (10, Priority.LOW),
    ]


def test_one_finding_per_process_and_unmatched_processes_are_absent() -> None:
    findings = evaluate(proc(1000, cmd="/bin/sleep 10"), proc(1001, cmd="/tmp/test_x"))
    assert [f.identity.pid for f in findings] == [1001]


# --- things that run hot by design --------------------------------------------------------


@pytest.mark.parametrize(
    "cmd",
    [
        "rustc --crate-name reaper --edition=2021 src/lib.rs",
        "/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus -quiet src/engine.cpp -O2",
        "/usr/bin/clang -cc1 -triple arm64-apple-macosx15.0.0 -O2 render.c",
        "cargo build --release",
        "/opt/google/chrome/chrome --type=renderer",
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe --type=renderer",
        "firefox",
        "vim tests/test_parser.rs",
        "/usr/share/code/code --unity-launch",
        "/usr/bin/nvim",
    ],
)
def test_busy_by_design_is_never_selected(cmd: str) -> None:
    hot = proc(cmd=cmd, cpu=100.0, age=5 * HOUR)
    assert evaluate(hot) == []
    huge = proc(cmd=cmd, cpu=100.0, age=5 * HOUR, rss_mb=16000)
    assert evaluate(huge) == []


@pytest.mark.parametrize(
    "cmd",
    [
        # The names these programs really run under on Windows and macOS.
        "C:\\Program Files\\Microsoft VS Code\\Code.exe",
        "/Applications/Safari.app/Contents/MacOS/Safari",
    ],
)
def test_busy_by_design_matches_real_program_names(cmd: str) -> None:
    hot = ProcessInfo(
        pid=5000,
        uid=501,
        user="dana",
        name=cmd.rsplit("/", 1)[-1].rsplit("\\", 1)[-1],
        cmdline=(cmd,),
        create_time=T0.timestamp() - 5 * HOUR,
        cpu_percent=100.0,
        cpu_time=5 * HOUR,
        status=ProcessState.RUNNING,
    )
    assert evaluate(hot) == []


# Real command lines of compilers, browsers, editors and IDEs on Linux, macOS and Windows,
# each with arguments that a default rule's command_patterns would otherwise select (a
# "_test" or "test_" file, a ".log", "jest", "vitest", a "/tmp/test_" directory). Those marked
# "fixture" are copied from /work/shared/fixtures/real (public `ps`/WMI captures).
BUSY_BY_DESIGN = [
    # -- build drivers and compilers run by node
    ("make", ("make", "-j8", "all")),
    ("ninja", ("/usr/bin/ninja", "-C", "out/Release", "test_runner")),
    (
        "bazel server",
        (
            "/usr/lib/jvm/bin/java",
            "-Xss20m",
            "com.google.devtools.build.lib.bazel.Bazel",
            "--batch_test",
        ),
    ),
    ("gradlew", ("C:\\src\\app\\gradlew.bat", "test")),
    (
        "tsc under node",
        ("node", "/home/dana/app/node_modules/typescript/bin/tsc", "-w", "-p", "test"),
    ),
    ("webpack under node", ("/usr/bin/node", "/app/node_modules/.bin/webpack", "--watch")),
    ("vite under node", ("node", "/app/node_modules/vite/bin/vite.js", "build")),
    # -- compilers, linkers, toolchains
    (
        "clang++",
        ("clang++", "-std=c++20", "-O2", "-c", "tests/test_parser.cpp", "-o", "test_parser.o"),
    ),
    (
        "clang-17",
        (
            "/usr/lib/llvm-17/bin/clang-17",
            "-cc1",
            "-triple",
            "x86_64-pc-linux-gnu",
            "-emit-obj",
            "-main-file-name",
            "engine_test.cc",
        ),
    ),
    ("gcc-12", ("gcc-12", "-O2", "-o", "/tmp/test_runner", "test_runner.c")),
    ("cross-g++", ("/usr/bin/x86_64-linux-gnu-g++-12", "-c", "src/mutation_test.cc")),
    ("cross-gcc-in-tmp-test", ("/tmp/test_toolchain/bin/arm-none-eabi-gcc", "-c", "blink_test.c")),
    (
        "go-compile",
        (
            "/usr/local/go/pkg/tool/linux_amd64/compile",
            "-o",
            "/tmp/go-build2871/b001/_pkg_.a",
            "-trimpath",
            "/tmp/go-build2871/b001=>",
            "-p",
            "main",
            "./main_test.go",
        ),
    ),
    (
        "go-compile-windows",
        (
            "C:\\Program Files\\Go\\pkg\\tool\\windows_amd64\\compile.exe",
            "-o",
            "C:\\Temp\\go-build1\\b001\\_pkg_.a",
            "-p",
            "main",
        ),
    ),
    ("go-run", ("go", "run", "main.go")),  # fixture: macOS ps, project-atlas
    (
        "ld.lld",
        (
            "ld.lld",
            "-o",
            "target/debug/deps/parser_tests-5f1e2a",
            "@/tmp/rustcXYZ/linker-arguments",
        ),
    ),
    (
        "lto1",
        (
            "/usr/lib/gcc/x86_64-linux-gnu/12/lto1",
            "-quiet",
            "-dumpbase",
            "./test_all.ltrans0.ltrans",
            "-O2",
        ),
    ),
    ("ghc", ("/home/noah/.ghcup/bin/ghc-9.4.7", "--make", "-O2", "test/Spec_test.hs")),
    (
        "msvc-cl",
        (
            "C:\\Program Files\\Microsoft Visual Studio\\2022\\Community\\VC\\Tools\\MSVC"
            "\\14.38.33130\\bin\\Hostx64\\x64\\cl.exe",
            "/c",
            "/O2",
            "test_scheduler.cpp",
        ),
    ),
    (
        "xcode-clang",
        (
            "/Applications/Xcode.app/Contents/Developer/Toolchains/XcodeDefault.xctoolchain/usr/bin/clang",
            "-cc1",
            "-triple",
            "arm64-apple-macosx14.0.0",
            "render_test.m",
        ),
    ),
    (
        "swift-frontend",
        (
            "/Applications/Xcode.app/Contents/Developer/Toolchains/XcodeDefault.xctoolchain/usr/bin/swift-frontend",
            "-frontend",
            "-c",
            "Tests/AppTests/test_sync.swift",
        ),
    ),
    (
        "cargo-build",
        (
            "/Users/dana/.rustup/toolchains/stable-aarch64-apple-darwin/bin/cargo",
            "build",
            "--tests",
        ),
    ),
    (
        "gradle-daemon",
        (
            "/usr/lib/jvm/java-17-openjdk-amd64/bin/java",
            "-Xmx2g",
            "-cp",
            "/home/noah/.gradle/wrapper/dists/gradle-8.5-bin/gradle-launcher-8.5.jar",
            "org.gradle.launcher.daemon.bootstrap.GradleDaemon",
            "8.5",
        ),
    ),
    # -- browsers
    (
        "playwright-chrome",
        (
            "/home/tim/.cache/ms-playwright/chromium-1064/chrome-linux/chrome",
            "--type=renderer",
            "--crashpad-handler-pid=492776",
            "--enable-crash-reporter=,",
            "--noerrdialogs",
            "--user-data-dir=/tmp/playwright_chromiumdev_profile-aB8Eqd",
        ),
    ),  # fixture: ps aux, Ubuntu 22.04
    (
        "chrome-crashpad",
        (
            "/home/tim/.cache/ms-playwright/chromium-1064/chrome-linux/chrome_crashpad_handler",
            "--monitor-self",
            "--monitor-self-annotation=ptype=crashpad-handler",
            "--database=/home/tim/.config/chromium/Crash Reports",
        ),
    ),  # fixture
    (
        "chromium-browser",
        (
            "/usr/lib/chromium-browser/chromium-browser",
            "--type=gpu-process",
            "--field-trial-handle=test_1",
        ),
    ),
    ("brave", ("/opt/brave.com/brave/brave", "--type=renderer", "--lang=en-US")),
    (
        "firefox-content",
        ("/usr/lib/firefox/firefox", "-contentproc", "-childID", "7", "-isForBrowser", "tab"),
    ),
    (
        "firefox-plugin-container-macos",
        (
            "/Applications/Firefox.app/Contents/MacOS/plugin-container.app/Contents/MacOS/plugin-container",
            "-childID",
            "3",
            "-isForBrowser",
            "tab",
        ),
    ),
    (
        "google-chrome-macos",
        (
            "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
            "--origin-trial-disabled-features=CanvasTextNg|WebAssemblyCustomDescriptors",
            "--restart",
        ),
    ),  # fixture: macOS ps, project-atlas
    (
        "chrome-helper-macos",
        (
            "/Applications/Google Chrome.app/Contents/Frameworks/Google Chrome Framework.framework"
            "/Versions/120.0.6099.109/Helpers/Google Chrome Helper (Renderer).app/Contents/MacOS"
            "/Google Chrome Helper (Renderer)",
            "--type=renderer",
        ),
    ),
    (
        "safari-webcontent",
        (
            "/System/Library/Frameworks/WebKit.framework/Versions/A/XPCServices/com.apple.WebKit.WebContent.xpc/Contents/MacOS/com.apple.WebKit.WebContent",
        ),
    ),
    # fixture: Windows Get-WmiObject Win32_Process (Format-List), the raw CommandLine
    (
        "firefox-windows",
        (
            '"C:\\Program Files\\Mozilla Firefox\\firefox.exe" -contentproc'
            ' --channel="3116.0.1418504536\\2120526436" -childID 1 -isForBrowser'
            " -intPrefs 5:50|6:-1|28:1000|33:20|34:10|43:128|",
        ),
    ),
    ("chrome-exe-no-cmdline", ()),  # fixture: tasklist lists only "chrome.exe"
    (
        "edge-webview2",
        (
            "C:\\Program Files (x86)\\Microsoft\\EdgeWebView\\Application\\120.0.2210.91"
            "\\msedgewebview2.exe",
            "--embedded-browser-webview=1",
            "--type=renderer",
        ),
    ),
    # -- editors
    ("vim-log", ("vim", "something.log")),
    ("emacs-log", ("emacs", "-nw", "/var/log/app.log")),
    ("nano-log", ("nano", "/home/noah/notes_test.log")),
    ("gedit-test-plan", ("gedit", "test_plan.txt")),
    ("code-jest", ("code", "jest.js")),
    ("nvim-vitest", ("nvim", "node_modules/.bin/vitest")),
    ("sublime-text", ("/opt/sublime_text/sublime_text", "--detached", "tests/test_sync.py")),
    (
        "sublime-text-2-macos",
        ("/Applications/Sublime Text 2.app/Contents/MacOS/Sublime Text 2", "-psn_0_831691"),
    ),  # fixture: macOS ps aux, cmsi387
    ("zed", ("/home/noah/.local/zed.app/libexec/zed-editor", "tests/test_sync.rs")),
    (
        "vscode-windows",
        (
            "C:\\Users\\dana\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe",
            "--type=renderer",
            "C:\\src\\web\\jest.js",
        ),
    ),
    ("vscode-electron-macos", ("/Applications/Visual Studio Code.app/Contents/MacOS/Electron",)),
    (
        "vscode-helper-macos",
        (
            "/Applications/Visual Studio Code.app/Contents/Frameworks/Code Helper (Renderer).app"
            "/Contents/MacOS/Code Helper (Renderer)",
            "--type=renderer",
            "--user-data-dir=/Users/dana/Library/Application Support/Code",
        ),
    ),
    (
        "vscode-server-pylance",
        (
            "/home/tim/.vscode-server/bin/1e790d77f81672c49be070e04474901747115651/node",
            "/home/tim/.vscode-server/extensions/ms-python.vscode-pylance-2024.2.3/dist/server.bundle.js",
            "--cancellationReceive=file:cbc2fd2fbd6bc3bc0cb997dc1bb07c231d7e9a4",
        ),
    ),  # fixture: ps aux, Ubuntu 22.04
    ("cursor", ("/usr/share/cursor/cursor", "--type=renderer", "jest.js")),
    (
        "notepad-windows",
        (
            "C:\\Program Files\\WindowsApps"
            "\\Microsoft.WindowsNotepad_11.2607.14.0_x64__8wekyb3d8bbwe\\Notepad\\Notepad.exe",
            "C:\\logs\\nightly.log",
        ),
    ),  # path: fixture, Get-Process
    ("notepad++", ("C:\\Program Files\\Notepad++\\notepad++.exe", "C:\\build\\logs\\test_run.log")),
    # -- IDEs
    (
        "intellij-jvm",
        (
            "/opt/idea-IU-233.13135.103/jbr/bin/java",
            "-classpath",
            "/opt/idea-IU-233.13135.103/lib/app.jar:/opt/idea-IU-233.13135.103/lib/util.jar",
            "-Xmx2048m",
            "-Didea.vendor.name=JetBrains",
            "com.intellij.idea.Main",
            "/home/noah/src/reaper/tests/test_engine.py",
        ),
    ),
    ("pycharm", ("/opt/pycharm-2023.3/bin/pycharm.sh", "/home/noah/src/test_project")),
    (
        "idea64-windows",
        (
            "C:\\Program Files\\JetBrains\\IntelliJ IDEA 2023.3.2\\bin\\idea64.exe",
            "C:\\src\\test_suite",
        ),
    ),
    ("idea-macos", ("/Applications/IntelliJ IDEA.app/Contents/MacOS/idea",)),
    ("eclipse", ("/usr/lib/eclipse/eclipse", "-data", "/home/noah/workspace/test_suite")),
    (
        "eclipse-javaw",
        (
            "C:\\eclipse\\jre\\bin\\javaw.exe",
            "-jar",
            "C:\\eclipse\\plugins\\org.eclipse.equinox.launcher_1.6.600.v20231106-1826.jar",
            "-data",
            "C:\\Users\\dana\\workspace\\test_suite",
        ),
    ),
    ("xcode", ("/Applications/Xcode.app/Contents/MacOS/Xcode",)),
    (
        "sourcekitservice",
        (
            "/Applications/Xcode.app/Contents/Developer/Toolchains/XcodeDefault.xctoolchain/usr/lib/sourcekitd.framework/Versions/A/XPCServices/SourceKitService.xpc/Contents/MacOS/SourceKitService",
        ),
    ),
    (
        "devenv",
        (
            "C:\\Program Files\\Microsoft Visual Studio\\2022\\Community\\Common7\\IDE\\devenv.exe",
            "C:\\src\\Reaper_tests.sln",
        ),
    ),
    (
        "servicehub",
        (
            "C:\\Program Files\\Microsoft Visual Studio\\2022\\Community\\Common7\\ServiceHub"
            "\\Hosts\\ServiceHub.Host.dotnet.x64\\ServiceHub.RoslynCodeAnalysisService.exe",
            "/parentPid",
            "1234",
        ),
    ),
]

_NAMES = {"chrome-exe-no-cmdline": "chrome.exe"}


def _program(argv: tuple[str, ...], name: str, **figures: float) -> ProcessInfo:
    age = figures["age"]
    return ProcessInfo(
        pid=5000,
        uid=1000,
        user="noah",
        name=name,
        cmdline=argv,
        create_time=T0.timestamp() - age,
        cpu_percent=figures["cpu"],
        cpu_time=age * figures["lifetime"] / 100,
        rss=int(figures["rss_mb"] * 1024 * 1024),
        status=ProcessState.RUNNING if figures["cpu"] else ProcessState.SLEEPING,
    )


def _looks(p: ProcessInfo) -> list[ProcessInfo]:
    """Every way a default rule could see ``p``: hot for hours, idle for days, huge, and hot
    over a measured window (a daemon's history), beside the shapes of ``p`` itself."""
    argv, name = p.cmdline, p.name
    hot = _program(argv, name, cpu=100.0, age=5 * HOUR, lifetime=100.0, rss_mb=900)
    now = T0.timestamp()
    measured = hot.model_copy(update={"cpu_samples": ((now - 900, 0.0), (now, 900.0))})
    return [
        hot,
        measured,
        _program(argv, name, cpu=0.0, age=3 * DAY, lifetime=0.001, rss_mb=300),
        _program(argv, name, cpu=0.5, age=2 * HOUR, lifetime=0.4, rss_mb=120),
        _program(argv, name, cpu=30.0, age=2 * HOUR, lifetime=30.0, rss_mb=24000),
    ]


@pytest.mark.parametrize(("argv"), [pytest.param(a, id=i) for i, a in BUSY_BY_DESIGN])
def test_no_default_rule_selects_a_compiler_browser_editor_or_ide(
    request: pytest.FixtureRequest, argv: tuple[str, ...]
) -> None:
    case = request.node.callspec.id
    name = _NAMES.get(case) or argv[0].replace("\\", "/").rsplit("/", 1)[-1][:15]
    for look in _looks(_program(argv, name, cpu=0, age=HOUR, lifetime=0, rss_mb=1)):
        assert evaluate(look) == [], (look.command, look.cpu_percent, look.age_seconds(T0))


def test_the_busy_by_design_cases_would_be_selected_without_the_exclusions() -> None:
    # The cases above are meant to be hits but for the exclusions: prove that they are.
    bare = [
        r.model_copy(
            update={
                "conditions": r.conditions.model_copy(
                    update={"exclude_patterns": (), "exclude_presets": ()}
                )
            }
        )
        for r in DEFAULT_RULES
    ]
    for case, argv in BUSY_BY_DESIGN:
        name = _NAMES.get(case) or argv[0].replace("\\", "/").rsplit("/", 1)[-1][:15]
        looks = _looks(_program(argv, name, cpu=0, age=HOUR, lifetime=0, rss_mb=1))
        assert any(evaluate(look, rules=bare) for look in looks), case


ROGUE = [
    # Names that merely contain a compiler's, browser's or editor's name are still caught.
    ("/tmp/test_gcc_parser", "hot", "infinite_loop"),
    ("/tmp/test_gcc_parser", "idle", "zombie_test_binary"),
    ("/tmp/build/emacs_test", "idle", "zombie_test_binary"),
    ("/home/noah/.cargo/bin/cargo-nextest nextest run", "idle", "hung_test"),
    ("/home/noah/src/app/target/debug/deps/vim_plugin_tests-0a1b2c", "idle", "hung_test"),
    ("node /home/noah/src/chrome-launcher/test_launch.js", "idle", "hung_test"),
    # An argument naming one does not hide the process.
    ("/tmp/test_x --compiler /usr/bin/gcc", "hot", "infinite_loop"),
    ("python3 code.py", "hot", "infinite_loop"),
    ("/home/noah/bin/cc-spinner --forever", "hot", "infinite_loop"),
    ("C:\\build\\out\\test_gcc_frontend.exe --gtest_filter=*", "hot", "infinite_loop"),
    ("node /web/node_modules/.bin/vitest run --root /home/dana/code", "young", "vitest_timeout"),
    ("node /Users/dana/src/editor/node_modules/jest/bin/jest.js --ci", "young", "jest_timeout"),
    ("node /web/node_modules/vitest/vitest.mjs run", "young", "vitest_timeout"),
    ("/tmp/test_make_parser --loop", "hot", "infinite_loop"),
    ("tail -f /var/log/chrome-updater.log", "idle", "orphaned_monitor"),
    ("/usr/bin/java -jar /srv/app/leaky.jar", "huge", "memory_hog"),
]

_SHAPES = {
    "hot": {"cpu": 100.0, "age": 5 * HOUR, "rss_mb": 50.0},
    "idle": {"cpu": 0.0, "age": 2 * DAY, "rss_mb": 5.0, "cpu_time": 1.0},
    "young": {"cpu": 3.0, "age": 660.0, "rss_mb": 80.0},
    "huge": {"cpu": 20.0, "age": HOUR, "rss_mb": 20000.0},
}


@pytest.mark.parametrize(("cmd", "shape", "rule"), ROGUE)
def test_rogue_processes_with_lookalike_names_are_still_selected(
    cmd: str, shape: str, rule: str
) -> None:
    [finding] = evaluate(proc(cmd=cmd, **_SHAPES[shape]))  # type: ignore[arg-type]
    assert finding.rule == rule
    assert "command not excluded" in finding.matched


# --- explain, disabled rules, rule validation ---------------------------------------------


def test_explain_lists_every_rule_with_its_checks() -> None:
    p = proc(cmd="tail -f /var/log/app.log", cpu=0.0, age=2 * DAY)
    explained = Detector(DEFAULT_RULES).explain(p, now=T0)
    assert sorted(r.name for r, _ in explained) == sorted(r.name for r in DEFAULT_RULES)
    ranks = [r.priority.rank for r, _ in explained]
    assert ranks == sorted(ranks)
    for rule, checks in explained:
        assert checks, f"{rule.name} has no checks"
    by_name = {r.name: checks for r, checks in explained}
    assert all(c.held for c in by_name["orphaned_monitor"])
    assert [c.predicate for c in by_name["orphaned_monitor"]] == [
        "cpu 0.0% <= 1%",
        "age 2d 0h >= 1d 0h",
        "command matches '^(\\\\S*/)?tail -f'",
        "command not excluded",
    ]
    assert not all(c.held for c in by_name["infinite_loop"])
    assert by_name["infinite_loop"][0].predicate == "cpu 0.0% >= 90%"
    assert not by_name["infinite_loop"][0].held


def test_explain_shows_the_exclusion_that_saved_a_process() -> None:
    p = proc(cmd="rustc src/lib.rs", cpu=99.0, age=HOUR)
    checks = dict(Detector(DEFAULT_RULES).explain(p, now=T0))
    loop = next(c for r, c in checks.items() if r.name == "infinite_loop")
    assert [c.held for c in loop] == [True, True, False]
    assert loop[-1].predicate.startswith("command excluded by ")


def test_disabled_rules_are_ignored() -> None:
    rules = [
        r.model_copy(update={"enabled": False}) if r.priority is Priority.CRITICAL else r
        for r in DEFAULT_RULES
    ]
    detector = Detector(rules)
    assert "infinite_loop" not in [r.name for r in detector.rules]
    assert "infinite_loop" not in [r.name for r, _ in detector.explain(proc(), now=T0)]
    spin = proc(cmd="/home/noah/spin", cpu=99.0, age=HOUR)
    assert detector.evaluate([spin], now=T0, host_id="h1") == []
    assert evaluate(proc(cmd="/tmp/test_x", age=5 * HOUR, cpu=0), rules=rules)[0].rule == (
        "hung_test"
    )


def test_custom_rule_with_states_and_users() -> None:
    rule = Rule(
        name="stopped_by_bob",
        conditions=RuleConditions(states=(ProcessState.STOPPED,), users=("bob",)),
    )
    assert rule_of_with([rule], proc(user="bob", status=ProcessState.STOPPED)) == "stopped_by_bob"
    assert rule_of_with([rule], proc(user="bob")) is None
    assert rule_of_with([rule], proc(user="alice", status=ProcessState.STOPPED)) is None


def test_invalid_regex_is_rejected() -> None:
    with pytest.raises(ValidationError, match="invalid regex"):
        RuleConditions(command_patterns=("ok", "(unclosed"))
    with pytest.raises(ValidationError, match="invalid regex"):
        RuleConditions(exclude_patterns=("[a-",))


def test_age_seconds_and_age_hours_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="not both"):
        RuleConditions(age_seconds=60, age_hours=1)
    assert RuleConditions(age_hours=2).min_age_seconds == 7200
    assert RuleConditions(age_seconds=5).min_age_seconds == 5
    assert RuleConditions().min_age_seconds is None


@pytest.mark.parametrize("name", ["Bad", "has space", "1st", "", "x" * 65])
def test_rule_names_are_identifiers(name: str) -> None:
    with pytest.raises(ValidationError):
        Rule(name=name)


def test_rules_reject_unknown_keys_and_negative_thresholds() -> None:
    with pytest.raises(ValidationError):
        Rule.model_validate({"name": "x", "conditions": {"cpu": 5}})
    with pytest.raises(ValidationError):
        RuleConditions(cpu_percent_min=-1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("TERM", Signal.SIGTERM),
        ("sigkill", Signal.SIGKILL),
        ("SIGHUP", Signal.SIGHUP),
        (" int ", Signal.SIGINT),
        (15, Signal.SIGTERM),
        (9, Signal.SIGKILL),
        ("3", Signal.SIGQUIT),
    ],
)
def test_signal_parse_accepts(value: str | int, expected: Signal) -> None:
    assert Signal.parse(value) is expected


@pytest.mark.parametrize("value", ["SIGFOO", "foo", "", 99, "SIGSTOP"])
def test_signal_parse_rejects(value: str | int) -> None:
    with pytest.raises(ValueError, match="signal"):
        Signal.parse(value)


def test_rule_action_parses_signals() -> None:
    action = RuleAction.model_validate({"signal": "kill", "fallback_signal": 15})
    assert (action.signal, action.fallback_signal) == (Signal.SIGKILL, Signal.SIGTERM)
    with pytest.raises(ValidationError):
        RuleAction.model_validate({"signal": "SIGFOO"})


# --- the built-in simulated tables --------------------------------------------------------

ALL_CASES = {
    "linux-incident": (
        OS.LINUX,
        Vantage(user="noah", uid=1000),
        {2174710, 2215386, 2256525, 4179152, 627250, 686678, 1393626, 10252},
    ),
    "linux-ci": (OS.LINUX, Vantage(user="ci", uid=1500), {48211, 39020}),
    "macos-dev": (OS.MACOS, Vantage(user="dana", uid=501), {14022, 15510, 16033, 17120}),
    "windows-dev": (OS.WINDOWS, Vantage(user="LAB\\builder"), {7010, 7424, 7600, 9900, 8100}),
}


def _table_findings(table: str) -> tuple[list[Finding], list[ProcessInfo]]:
    os, vantage, _ = ALL_CASES[table]
    spec = host_spec(table, os, options={"process_table": table})
    infos = list(SimulatedLab(clock=ManualClock(T0)).host(spec).processes())
    policy = SafetyPolicy(SafetySettings(), vantage)
    return Detector(DEFAULT_RULES).evaluate(infos, now=T0, host_id=table, policy=policy), infos


@pytest.mark.parametrize("table", sorted(ALL_CASES))
def test_builtin_table_killable_set(table: str) -> None:
    findings, infos = _table_findings(table)
    killable = {f.identity.pid for f in findings if f.killable}
    assert killable == ALL_CASES[table][2]
    assert len({f.identity.pid for f in findings}) == len(findings)
    # Every process whose note says it must survive does.
    notes = {p.pid: p.note for p in load_table(table).processes}
    must_survive = {pid for pid, note in notes.items() if note.startswith("must survive")}
    assert must_survive
    assert not must_survive & killable
    # Every rogue process (noted, not a survivor, not a zombie) is killable.
    rogue = {
        pid
        for pid, note in notes.items()
        if note and not note.startswith("must survive") and not note.startswith("zombie")
    }
    assert rogue == killable
    assert {p.pid for p in infos} >= killable


def test_linux_incident_in_detail() -> None:
    findings, _ = _table_findings("linux-incident")
    by_pid = {f.identity.pid: f for f in findings}
    assert by_pid[1543].rule == "infinite_loop"
    assert by_pid[1543].protected_by == "whitelisted:gnome-shell"
    assert by_pid[3500].rule == "hung_test"
    assert by_pid[3500].protected_by == "root_owned"
    assert by_pid[3600].rule == "orphaned_monitor"
    assert by_pid[3600].protected_by == "other_user"
    for pid in (1, 2, 812, 2210, 3000, 3100, 3200, 3300, 3700):
        assert pid not in by_pid or not by_pid[pid].killable, pid
    assert {
        pid: by_pid[pid].rule
        for pid in (2174710, 2215386, 2256525, 4179152, 627250, 686678, 1393626)
    } == {
        2174710: "infinite_loop",
        2215386: "infinite_loop",
        2256525: "infinite_loop",
        4179152: "infinite_loop",
        627250: "hung_test",
        686678: "hung_test",
        1393626: "hung_test",
    }
    # `tail -f /tmp/sprint43_ignored_tests_full.log` matches hung_test's `.*_test.*`, but
    # hung_test leaves log monitors to orphaned_monitor.
    assert by_pid[10252].rule == "orphaned_monitor"
    assert by_pid[10252].killable
    assert by_pid[2174710].reason == "infinite_loop: CPU 99.9% for 5h 12m"


def test_linux_incident_via_load_table_and_to_info_matches_the_lab() -> None:
    started = T0.timestamp()
    infos = [_to_info(p, started) for p in load_table("linux-incident").processes]
    policy = SafetyPolicy(SafetySettings(), Vantage(user="noah", uid=1000))
    findings = Detector(DEFAULT_RULES).evaluate(infos, now=T0, host_id="x", policy=policy)
    lab_findings, _ = _table_findings("linux-incident")
    assert {(f.identity.pid, f.rule, f.protected_by) for f in findings} == {
        (f.identity.pid, f.rule, f.protected_by) for f in lab_findings
    }


def test_windows_dev_in_detail() -> None:
    findings, _ = _table_findings("windows-dev")
    by_pid = {f.identity.pid: f for f in findings}
    assert by_pid[9100].rule == "memory_hog"
    assert not by_pid[9100].killable
    assert by_pid[9100].protected_by == "other_user"
    assert {pid: by_pid[pid].rule for pid in (7010, 7424, 7600, 9900, 8100)} == {
        7010: "infinite_loop",
        7424: "jest_timeout",
        7600: "orphaned_monitor",
        9900: "hung_test",
        8100: "jest_timeout",
    }
    for pid in (4, 628, 5120, 6400, 8800, 9300):
        assert pid not in by_pid or not by_pid[pid].killable, pid


def test_macos_dev_in_detail() -> None:
    findings, _ = _table_findings("macos-dev")
    by_pid = {f.identity.pid: f for f in findings}
    assert {pid: by_pid[pid].rule for pid in (14022, 15510, 16033, 17120)} == {
        14022: "infinite_loop",
        15510: "vitest_timeout",
        16033: "hung_test",
        17120: "orphaned_monitor",
    }
    for pid in (1, 88, 2301, 2400, 2500, 2600, 3100):
        assert pid not in by_pid or not by_pid[pid].killable, pid


def test_linux_ci_in_detail() -> None:
    findings, _ = _table_findings("linux-ci")
    by_pid = {f.identity.pid: f for f in findings}
    assert (by_pid[48211].rule, by_pid[39020].rule) == ("hung_test", "orphaned_monitor")
    assert 51000 not in by_pid  # the compiler at full CPU is excluded, not merely protected
    for pid in (1, 4100, 4300):
        assert pid not in by_pid or not by_pid[pid].killable, pid


def test_a_rule_without_conditions_is_refused() -> None:
    with pytest.raises(ValidationError, match="would select every process"):
        Rule(name="everything")
    with pytest.raises(ValidationError, match="would select every process"):
        Rule(name="only_excludes", conditions=RuleConditions(exclude_patterns=("x",)))


# --- the fast path agrees with the explained evaluation ------------------------------------

_COMMANDS = [
    "/tmp/test_loop",
    "cargo-nextest run",
    "tail -f /var/log/app.log",
    "rustc --edition 2021",
    "node /x/node_modules/.bin/vitest run",
    "C:\\\\Program Files\\\\Code.exe",
    "vim a_test.rs",
    "/usr/bin/Safari",
    "npm test",
    "python3 -m pytest tests/test_x.py",
    "sleep 60",
    "gcc-12 -O2 -o /tmp/test_x test_x.c",
    "/usr/local/go/pkg/tool/linux_amd64/compile -o _pkg_.a main_test.go",
    "gedit test_plan.txt",
    "code jest.js",
    "vim app.log",
    "/tmp/test_gcc_parser",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome --type=renderer",
    "java -cp app.jar com.intellij.idea.Main test_x.py",
]

_BOUND = st.none() | st.floats(0, 200)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    cmd=st.sampled_from(_COMMANDS),
    cpu=st.floats(0, 200),
    age=st.floats(0, 10 * DAY),
    share=st.floats(0, 1.5),
    rss_mb=st.floats(0, 20000),
    status=st.sampled_from(list(ProcessState)),
    looks=st.lists(st.tuples(st.floats(1, 4000), st.floats(0, 4000)), max_size=4),
    cpu_min=_BOUND,
    window=st.floats(0, 5000),
    lifetime_min=_BOUND,
    lifetime_max=_BOUND,
    memory_min=st.none() | st.floats(0, 20000),
    memory_max=st.none() | st.floats(0, 20000),
)
def test_fast_selection_equals_all_checks_holding(
    cmd,
    cpu,
    age,
    share,
    rss_mb,
    status,
    looks,
    cpu_min,
    window,
    lifetime_min,
    lifetime_max,
    memory_min,
    memory_max,
):
    samples, wall, spent = [], 1_000_000.0, 0.0
    for gap, used in looks:
        wall, spent = wall + gap, spent + min(used, gap)
        samples.append((wall, spent))
    p = proc(cmd=cmd, cpu=cpu, age=age, cpu_time=age * share, rss_mb=rss_mb, status=status)
    p = p.model_copy(update={"cpu_samples": tuple(samples)})
    extra = Rule(name="idle", conditions=RuleConditions(idle_seconds=600, states=(status,)))
    # Every numeric condition, with drawn thresholds (age_seconds = 0 keeps it a valid rule
    # whatever is drawn): sustained and lifetime CPU, memory from below and above.
    bounds = Rule(
        name="bounds",
        conditions=RuleConditions(
            cpu_percent_min=cpu_min,
            duration_seconds=None if cpu_min is None else window,
            lifetime_cpu_percent_min=lifetime_min,
            lifetime_cpu_percent_max=lifetime_max,
            memory_mb_min=memory_min,
            memory_mb_max=memory_max,
            age_seconds=0,
        ),
    )
    detector = Detector((*DEFAULT_RULES, extra, bounds))
    for compiled in detector._compiled:
        fast = _selects(compiled, p, p.command, T0.timestamp())
        assert fast == all(c.held for c in _check(compiled, p, T0)), compiled.rule.name
