"""Every third-party package the pipeline imports is declared in pyproject.toml's dependencies."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

import tomllib

from pipeline import REPO_ROOT


def imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for path in (REPO_ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "pipeline"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared_names = {normalise(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in declared}
    providers = packages_distributions()
    missing = {
        module: providers.get(module)
        for module in imported_top_level_modules()
        if not declared_names & {normalise(d) for d in providers.get(module, [module])}
    }
    assert not missing, f"imported but not in pyproject.toml dependencies: {missing}"
