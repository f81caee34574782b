"""The package boundaries of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"reaper_engine", "agents", "infra", "llm", "overseer"}
ALLOWED = {
    "reaper_engine": {"reaper_engine"},
    "agents": {"agents", "reaper_engine"},
    "infra": {"infra", "reaper_engine"},
    "llm": {"llm", "reaper_engine"},
    "overseer": PROJECT,
}
HEAVY = {"redis", "rq", "paramiko", "winrm", "anthropic", "starlette", "uvicorn"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package):
    offenders = {}
    for path in (ROOT / package).rglob("*.py"):
        bad = (imports(path) & PROJECT) - ALLOWED[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_no_heavy_dependency_is_imported_at_module_level():
    offenders = {}
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            top = set()
            for node in tree.body:  # module level only: adapters import inside functions
                if isinstance(node, ast.Import):
                    top.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    top.add(node.module.split(".")[0])
            if top & HEAVY:
                offenders[str(path.relative_to(ROOT))] = sorted(top & HEAVY)
    assert offenders == {}
