"""The package's shape: stages, tracking and runtime as layers, no import cycles, short run_job.

Imports are read from the source (every ``import`` and ``from ... import``, inside functions too), so
a cycle hidden in a function body counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import inspect

from pipeline import REPO_ROOT

PACKAGE = REPO_ROOT / "pipeline"
# Lower layers never import higher ones: tracking < runtime < stages < the job and the commands.
LAYER = {"pipeline": 0, "pipeline.tracking": 1, "pipeline.runtime": 2, "pipeline.stages": 3}
TOP = 4  # pipeline.job, pipeline.start, the commands


def module_name(path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_imports(path) -> set[str]:
    """Every module a file imports (``from pipeline.x import y`` counts ``pipeline.x`` and ``pipeline.x.y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_of(path) -> set[str]:
    """The ``pipeline`` modules (or names) a file imports."""
    return {name for name in all_imports(path) if name.split(".")[0] == "pipeline"}


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(name: str) -> int:
    """0 for the package root, 1-3 for a module of tracking, runtime or stages, 4 for the rest."""
    return LAYER.get(".".join(name.split(".")[:2]), TOP)


def test_no_module_imports_one_that_imports_it_back():
    edges = graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in edges[node]:
            if nxt in path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif len(path) < 12:
                visit(nxt, [*path, nxt])

    for start in edges:
        visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_lower_layers_never_import_higher_ones():
    wrong = [
        (a, b) for a, targets in graph().items() for b in targets if layer(b) > layer(a) and not b.startswith(f"{a}.")
    ]
    assert not wrong, f"imports upward (tracking < runtime < stages < job/commands): {wrong}"


def test_the_layout_shows_the_architecture():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {"stages", "tracking", "runtime"} <= folders
    commands = {"__main__", "rerun", "resume", "compare", "runs", "rank"}
    assert commands <= {p.stem for p in PACKAGE.glob("*.py")}


def test_job_owns_no_mlflow_call_and_run_job_fits_on_a_screen():
    from pipeline import job

    assert "mlflow" not in {m.split(".")[0] for m in all_imports(PACKAGE / "job.py")}
    lines = inspect.getsource(job.run_job).splitlines()
    assert len(lines) <= 45, f"run_job is {len(lines)} lines"
