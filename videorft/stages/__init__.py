"""Pipeline stages, one module each, in DAG order.

Each module has ``run(params, root) -> dict`` (a JSON-able summary). ``dvc.yaml`` runs them as
``videorft stage NAME``; the Prefect flow runs them through DVC so both share one definition of
what a stage depends on.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from videorft.params import Params

# DAG order (a topological order of dvc.yaml's graph).
STAGES: tuple[str, ...] = (
    "download", "extract_frames", "build_dataset", "base_model", "warm_start", "train",
    "evaluate", "publish",
)

#: The stages that prepare data (no model involved).
DATA_STAGES: tuple[str, ...] = STAGES[:3]

StageFn = Callable[[Params, Path], dict[str, Any]]


def get_stage(name: str) -> StageFn:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    return importlib.import_module(f"videorft.stages.{name}").run


def upstream_map(root: Path) -> dict[str, set[str]]:
    """Every stage's upstream stages, directly or not: read from dvc.yaml's graph (the one
    description of dependencies), not from a list kept here, with one DVC repo open."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        return {node.name: {up.name for up in nx.descendants(graph, node)} for node in graph.nodes}


def _known(graph: dict[str, set[str]], stage: str) -> None:
    if stage not in graph:
        raise KeyError(f"dvc.yaml has no stage {stage!r}")


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
    if to_stage is None:
        return list(STAGES)
    if to_stage not in STAGES:
        raise KeyError(f"unknown stage {to_stage!r} (stages: {', '.join(STAGES)})")
    wanted = {to_stage} | upstream(root, to_stage)
    return [name for name in STAGES if name in wanted]


def stages_to_force(
    root: Path, *, force: bool = False, from_stage: str | None = None
) -> set[str]:
    """Stages to rerun regardless of DVC: all (`force`), or `from_stage` and everything
    downstream of it in the DAG."""
    if force:
        return set(STAGES)
    if from_stage is None:
        return set()
    if from_stage not in STAGES:
        raise KeyError(f"unknown stage {from_stage!r} (stages: {', '.join(STAGES)})")
    return {from_stage} | downstream(root, from_stage)
