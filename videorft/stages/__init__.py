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

# DAG order. Later issues append: warm_start, train, evaluate, publish.
STAGES: tuple[str, ...] = ("download", "extract_frames", "build_dataset")

StageFn = Callable[[Params, Path], dict[str, Any]]


def get_stage(name: str) -> StageFn:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r} (stages: {', '.join(STAGES)})")
    return importlib.import_module(f"videorft.stages.{name}").run


def stages_to_force(*, force: bool = False, from_stage: str | None = None) -> set[str]:
    """Stages to rerun regardless of DVC: all (`force`), or `from_stage` and every later one."""
    if force:
        return set(STAGES)
    if from_stage is None:
        return set()
    if from_stage not in STAGES:
        raise KeyError(f"unknown stage {from_stage!r} (stages: {', '.join(STAGES)})")
    return set(STAGES[STAGES.index(from_stage) :])
