"""infra.gc_tuning: what ``reaper engine`` does to the collector once started."""

from __future__ import annotations

import gc
import subprocess
import sys

from infra.gc_tuning import YOUNG_THRESHOLD, tune_gc


def test_tune_gc_freezes_what_exists_and_collects_the_young_generation_rarely():
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_importing_it_changes_nothing():
    probe = "import gc; t = gc.get_threshold(); import infra.gc_tuning; "
    probe += "assert gc.get_threshold() == t and gc.get_freeze_count() == 0"
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
