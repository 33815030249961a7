"""Pipeline stages, one module each, named as in dvc.yaml.

Each module has ``run(params, root) -> dict`` (a JSON-able summary). ``dvc.yaml`` runs them as
``videorft stage NAME`` and is the one list of stages: their order (`stage_names`) and what each
depends on (`upstream_map`) are read from it; the Prefect flow runs them through DVC so both
share one definition of what a stage depends on.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from videorft.errors import ConfigError
from videorft.params import Params

StageFn = Callable[[Params, Path], dict[str, Any]]


def stage_modules() -> set[str]:
    """The stage modules of this package (each one a stage that dvc.yaml may run)."""
    return {info.name for info in pkgutil.iter_modules(__path__) if not info.ispkg}


def stage_names(root: Path) -> tuple[str, ...]:
    """The pipeline's stages in DAG order: the `stages` of ``root/dvc.yaml``, as the file lists
    them (upstream first; a test holds dvc.yaml to that)."""
    path = Path(root) / "dvc.yaml"
    try:
        stages = YAML(typ="safe").load(path.read_text()).get("stages")
    except (OSError, YAMLError, AttributeError) as exc:
        raise ConfigError(f"{path}: cannot read the pipeline's stages "
                          f"({type(exc).__name__}: {exc})") from None
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"{path}: no `stages` mapping")
    return tuple(str(name) for name in stages)


def get_stage(name: str) -> StageFn:
    _known(sorted(stage_modules()), name)
    return importlib.import_module(f"videorft.stages.{name}").run


def upstream_map(root: Path) -> dict[str, set[str]]:
    """Every stage's upstream stages, directly or not: read from dvc.yaml's graph (the one
    description of dependencies), not from a list kept here, with one DVC repo open."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        return {node.name: {up.name for up in nx.descendants(graph, node)} for node in graph.nodes}


def _known(stages: Iterable[str], stage: str) -> None:
    """Refuse a stage name that is not among ``stages`` (naming them)."""
    stages = list(stages)
    if stage not in stages:
        raise KeyError(f"unknown stage {stage!r} (stages: {', '.join(stages)})")


def downstream(root: Path, stage: str) -> set[str]:
    """The stages that depend, directly or not, on ``stage``."""
    graph = upstream_map(root)
    _known(graph, stage)
    return {name for name, ups in graph.items() if stage in ups}


def upstream(root: Path, stage: str) -> set[str]:
    """The stages ``stage`` depends on, directly or not."""
    graph = upstream_map(root)
    _known(graph, stage)
    return graph[stage]


def stages_to_run(root: Path, to_stage: str | None = None) -> list[str]:
    """The stages of a run, in DAG order: all, or ``to_stage`` and what it depends on (like
    ``dvc repro STAGE``)."""
    names = stage_names(root)
    if to_stage is None:
        return list(names)
    _known(names, to_stage)
    wanted = {to_stage} | upstream(root, to_stage)
    return [name for name in names if name in wanted]


def stages_to_force(
    root: Path, *, force: bool = False, from_stage: str | None = None
) -> set[str]:
    """Stages to rerun regardless of DVC: all (`force`), or `from_stage` and everything
    downstream of it in the DAG."""
    names = stage_names(root)
    if force:
        return set(names)
    if from_stage is None:
        return set()
    _known(names, from_stage)
    return {from_stage} | downstream(root, from_stage)
