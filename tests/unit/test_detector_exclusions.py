"""The default rules' exclusions: programs that run hot by design (compilers, browsers,
editors) are never selected, while rogue processes whose names merely look like them still are.

The catalogue of real command lines is in test_detector_busy_by_design.py.
"""

from __future__ import annotations

import pytest

from reaper_engine.models import ProcessInfo, ProcessState
from tests.factories import T0, proc
from tests.unit.detector_helpers import DAY, HOUR, evaluate

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


# --- lookalike names are still selected ---------------------------------------------------

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
