"""Packages that import their modules on first use still export every name they list."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

LAZY_PACKAGES = ("reaper_engine.models", "infra.memory")


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_listed_name_resolves_and_is_listed_by_dir(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        assert value.__name__ == name
    assert set(module.__all__) <= set(dir(module))


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_an_unknown_name_is_an_attribute_error(package):
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match="no_such_model"):
        module.no_such_model  # noqa: B018
    with pytest.raises(ImportError):
        exec(f"from {package} import no_such_model", {})


def test_importing_one_model_does_not_build_the_mission_models():
    script = (
        "import sys\n"
        "from reaper_engine.models import Finding, ProcessInfo\n"
        "from infra.memory import InMemoryEventBus\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(done.stdout.split())
    assert "reaper_engine.models.process" in loaded
    assert "infra.memory.bus" in loaded
    assert not loaded & {"reaper_engine.models.mission", "infra.memory.store"}
