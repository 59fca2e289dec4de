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


# ----------------------------------------------------------------------------------------------
# Read the config once: no module below the job takes the whole config
# ----------------------------------------------------------------------------------------------

# The commands, the job and the sweep's Hydra callback: they compose, hold or replay the whole config.
COMMAND_MODULES = {
    "job",
    "start",
    "rank",
    "sweep",
    "hydra_files",
    "__main__",
    "rerun",
    "resume",
    "cli",
    "compare",
    "runs",
    "promote",
    "env",
}
# Functions below the job that take the whole config because the whole config is what they handle:
# the one reading of it (spec.read_spec), its keys (schema), its params and artifacts in MLflow
# (tracking), the copy ranks read (launch), and Hydra's callback and sweeper interfaces (the sweep's config).
WHOLE_CONFIG_ALLOWED = {
    "pipeline.runtime.launch.run_launched",
    "pipeline.runtime.launch.config_digest",
    "pipeline.runtime.launch.write_job",
    "pipeline.runtime.optuna_sweeper.setup",
    "pipeline.stages.spec.read_spec",
    "pipeline.stages.spec.config_leaves",  # the leaves every cache key reads, once, in read_spec
    "pipeline.stages.schema.check_keys",
    "pipeline.stages.settings.check_values",  # every declared key of the config against its declaration
    "pipeline.logged_config.read_logged",  # a logged config read in today's shape (rerun, resume)
    "pipeline.logged_config.translate_logged",
    "pipeline.logged_config.drop_unknown",
    "pipeline.logged_config.fill_missing",
    "pipeline.stages.schema.unknown_keys",
    "pipeline.tracking.record.config_params",
    "pipeline.tracking.replay.hidden_keys",
    "pipeline.tracking.replay.with_overrides",
    "pipeline.tracking.run.config_secrets",
    "pipeline.tracking.run.job_run",
    "pipeline.tracking.run._start",
    "pipeline.tracking.run._log_config",
    "pipeline.tracking.study.settings",
    "pipeline.tracking.study.default_name",
}


def whole_config_parameters() -> set[str]:
    """``module.function`` for every function below the job with a parameter named ``cfg`` or ``config``
    (the name the whole composed config goes by; a slice is named for what it holds: ``training``,
    ``loss_cfg``, ``spec``). By name, over the whole package; ``tests/e2e/test_config_walk.py`` checks
    the same by value, over the functions a job calls."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        name = module_name(path)
        if name.count(".") == 1 and name.split(".")[1] in COMMAND_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            functions = (ast.FunctionDef, ast.AsyncFunctionDef)
            if isinstance(node, functions) and {a.arg for a in node.args.args + node.args.kwonlyargs} & {
                "cfg",
                "config",
            }:
                found.add(f"{name}.{node.name}")
    return found


# Names a config node goes by in the package: the whole config, its nodes, the job spec.
RECEIVERS = ("cfg", "config", "training", "hardware", "mine", "guard", "data", "loss", "model", "tracking", "spec")


def literal_defaults() -> list[str]:
    """Every ``X.get(key, <literal>)`` in the package, as ``file:line source``: a default written again
    in code shadows the one in the YAML (``None`` is no default: it only says the key may be absent)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                default = node.args[1] if len(node.args) == 2 else None
                literal = isinstance(default, (ast.List, ast.Dict, ast.Tuple, ast.Set)) or (
                    isinstance(default, ast.Constant) and default.value is not None
                )
                if literal:
                    found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {ast.unparse(node)}")
    return found


def or_defaults() -> list[str]:
    """Every ``X.get(key) or <literal>`` in the package (``hardware.get("machine_rank") or 0``): the same
    default written again, where ``or {}`` / ``or []`` (an absent mapping or list is an empty one) is none."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or)):
                continue
            first, rest = node.values[0], node.values[1:]
            getter = isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and first.func.attr == "get"
            if getter and any(_is_default(value) for value in rest):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {ast.unparse(node)}")
    return found


def _is_default(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return node.value not in (None, "")
    return isinstance(node, (ast.List, ast.Dict, ast.Tuple, ast.Set)) and bool(
        getattr(node, "elts", None) or getattr(node, "keys", None)
    )


def test_no_function_below_the_job_takes_the_whole_config():
    taking = whole_config_parameters()
    assert taking <= WHOLE_CONFIG_ALLOWED, (
        f"these take the whole config; give them the slice they read (a JobSpec part or a config node): "
        f"{sorted(taking - WHOLE_CONFIG_ALLOWED)}"
    )
    assert not WHOLE_CONFIG_ALLOWED - taking, f"no longer take it: drop from the list {WHOLE_CONFIG_ALLOWED - taking}"


def test_no_config_default_is_written_again_in_code():
    on_config = [line for line in literal_defaults() if line.split(" ", 1)[1].split(".")[0].endswith(RECEIVERS)]
    assert not on_config, f"defaults live in the YAML (conf/), not in .get(key, default): {on_config}"


def test_no_config_default_is_written_again_after_an_or():
    on_config = [line for line in or_defaults() if line.split(" ", 1)[1].split(".")[0].endswith(RECEIVERS)]
    assert not on_config, f"defaults live in the YAML (conf/), not in .get(key) or default: {on_config}"
