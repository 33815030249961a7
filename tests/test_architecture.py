"""The layout holds: the core package knows nothing of Prefect, its modules import each other
one way (no cycles, no private names across modules), and dvc.yaml's stages, the stage modules
and the Prefect tasks are the same list."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest
from ruamel.yaml import YAML

from tests.conftest import ROOT
from videorft.stages import stage_modules, stage_names, upstream_map

PACKAGE = ROOT / "videorft"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, at any depth
    (a lazy import inside a function still ties the modules together)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def _graph() -> nx.DiGraph:
    """videorft's modules, an edge from each to every videorft module it imports."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for base, names, _ in _imports(path):
            for target in [f"{base}.{n}" for n in names] + [base]:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target)
    return graph


def test_the_core_package_never_imports_prefect() -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line}" for path in PACKAGE.rglob("*.py")
                 for base, _, line in _imports(path) if base.split(".")[0] == "prefect"]
    assert offenders == [], "Prefect belongs in flows/ and tasks/, not videorft/"


def test_no_import_cycles_inside_the_core_package() -> None:
    graph = _graph()
    assert graph.number_of_edges() > 50  # the walk found the imports at all
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == []


@pytest.mark.parametrize("folder", ["videorft", "tasks", "flows"])
def test_no_module_imports_another_ones_private_names(folder: str) -> None:
    offenders = [f"{path.relative_to(ROOT)}:{line} takes {name} from {base}"
                 for path in (ROOT / folder).rglob("*.py")
                 for base, names, line in _imports(path)
                 for name in names if name.startswith("_") and not name.startswith("__")]
    assert offenders == []


def test_dvc_yaml_the_stage_modules_and_the_prefect_tasks_agree() -> None:
    from prefect import Task

    import tasks.stages

    names = stage_names(ROOT)
    assert set(names) == stage_modules()
    prefect_tasks = {value.name for value in vars(tasks.stages).values()
                     if isinstance(value, Task)}
    assert prefect_tasks == set(names)
    assert all(tasks.stages.stage_task(name).name == name for name in names)
    # dvc.yaml lists every stage after the stages it depends on: its order is the run order.
    upstream = upstream_map(ROOT)
    assert set(upstream) == set(names)
    for position, name in enumerate(names):
        assert upstream[name] <= set(names[:position]), name


#: Modules whose edits cannot change a stage's outputs, so no stage reruns for them.
NOT_OUTPUT_DEPS = {"videorft/errors.py"}


def test_dvc_yaml_lists_every_module_a_stage_imports() -> None:
    """A stage reruns when code it runs changes: every module it imports, directly or not (lazy
    imports too), is one of its dvc.yaml deps or lies in a folder that is."""
    graph = _graph()
    stages = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for stage, spec in stages.items():
        deps = [d.rstrip("/") for d in spec.get("deps", []) if d.startswith("videorft")]
        module = f"videorft.stages.{stage}"
        for name in sorted(nx.descendants(graph, module) | {module}):
            base = ROOT / name.replace(".", "/")
            path = (base.with_suffix(".py") if base.with_suffix(".py").is_file()
                    else base / "__init__.py").relative_to(ROOT).as_posix()
            covered = any(path == d or path.startswith(d + "/") for d in deps)
            if not covered and path not in NOT_OUTPUT_DEPS:
                missing.setdefault(stage, []).append(path)
    assert missing == {}
