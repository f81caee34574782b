"""A catalogue of real command lines of compilers, browsers, editors and IDEs: no default rule
selects any of them however it looks (hot, idle, huge, measured), and each would be selected
but for the exclusions."""

from __future__ import annotations

import pytest

from reaper_engine.models import ProcessInfo, ProcessState
from reaper_engine.rules import DEFAULT_RULES
from tests.factories import T0
from tests.unit.detector_helpers import DAY, HOUR, evaluate

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
