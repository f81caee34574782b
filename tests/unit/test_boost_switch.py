"""[scanner] boost_cpu_share: the one switch that keeps Reaper from raising its CPU share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from infra.config_files import LoadedConfig
from overseer import local_reaper
from overseer.local_reaper import LocalReaper
from reaper_engine.config import ReaperConfig, ScannerSettings


def reaper_with(boost_cpu_share: bool) -> LocalReaper:
    # A tiny sample window: the scan reads the live table twice, and only that.
    scanner = ScannerSettings(cpu_sample_seconds=0.01, boost_cpu_share=boost_cpu_share)
    loaded = LoadedConfig(config=ReaperConfig(scanner=scanner), sources=(), user_file=None)
    return LocalReaper(loaded, env={})


@pytest.mark.parametrize("enabled", [True, False])
def test_the_scan_boosts_only_when_the_configuration_allows(
    enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    boosts: list[str] = []

    @contextlib.contextmanager
    def recorded() -> Iterator[None]:
        boosts.append("boosted")  # instead of touching the test runner's priority
        yield

    monkeypatch.setattr(local_reaper, "boosted_cpu_share", recorded)
    report = reaper_with(enabled).scan()
    assert report.processes_scanned > 0  # it did look at the machine
    assert boosts == (["boosted"] if enabled else [])
