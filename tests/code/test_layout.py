"""The house's layout holds: no import cycle between groups, a self-contained served model, a small
top of `movierec/`, and every package the code imports declared in pyproject.toml."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("inference", "features", "models", "movierec", "tasks", "flows", "expectations")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at the top level of the file) for every import, function-level included."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.module, id(node) in top)]
            # `from package import module` imports the module.
            found += [(f"{node.module}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def _group(module: str) -> str:
    """Top-level packages are groups; inside movierec each subpackage is one, and each module at
    its top is one of its own: settings and errors sit below every stage, the CLI (the entry point)
    above the flows it runs."""
    parts = module.split(".")
    if parts[0] != "movierec" or len(parts) == 1:
        return parts[0]
    return ".".join(parts[:2])


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {_group(name): set() for name in modules}
    for name, path in modules.items():
        for imported, _ in _imports(path):
            if imported in modules and _group(imported) != _group(name):
                edges[_group(name)].add(_group(imported))
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_groups():
    edges = _graph()
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))
    # The layers, bottom up: each group imports only groups below it.
    assert edges["inference"] == set()
    assert edges["features"] <= {"inference"}
    assert edges["models"] <= {"inference", "features"}
    for group in ("inference", "features", "models"):
        assert not any(target.startswith("movierec") for target in edges[group]), group


def test_the_served_model_imports_nothing_of_the_project_and_mlflow_only_in_its_entry_point():
    standard = {"__future__", "json", "os", "collections", "concurrent", "dataclasses", "functools", "pathlib"}
    allowed = standard | {"numpy", "pandas", "scipy"}
    imports = _imports(REPO / "inference" / "model.py")
    assert {name.split(".")[0] for name, top in imports if top} <= allowed
    assert {name for name, top in imports if not top} == {"mlflow.pyfunc"}


def test_movierec_keeps_at_most_ten_app_level_modules_beside_its_groups():
    top = sorted(path.stem for path in (REPO / "movierec").glob("*.py") if path.stem != "__init__")
    assert len(top) <= 10, top
    groups = sorted(path.name for path in (REPO / "movierec").iterdir() if (path / "__init__.py").is_file())
    assert groups == ["data", "monitoring", "serving", "tracking", "training"]


def test_every_imported_distribution_is_declared():
    declared = {
        re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    distributions = metadata.packages_distributions()
    missing = {}
    for path in _modules().values():
        for imported, _ in _imports(path):
            root = imported.split(".")[0]
            if root in PACKAGES or root in sys.stdlib_module_names:
                continue
            names = {name.lower().replace("_", "-") for name in distributions.get(root, [root])}
            if not names & declared:
                missing.setdefault(root, set()).add(path.relative_to(REPO).as_posix())
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
