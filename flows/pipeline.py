"""The videorft pipeline flow: download -> extract_frames -> build_dataset -> base_model ->
warm_start -> train -> evaluate -> publish.

Each task asks DVC whether its stage changed and runs it only then, so re-running the flow
after a failure picks up at the failed stage (training resumes from its last checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from tasks.stages import (
    base_model,
    build_dataset,
    download,
    evaluate,
    extract_frames,
    publish,
    report_run,
    train,
    warm_start,
)
from videorft.pipeline.dvc import RunStatus
from videorft.stages import stages_to_force, stages_to_run, upstream_map


@flow(name="videorft-pipeline", log_prints=True)
def pipeline(
    root: str = ".", force: bool = False, from_stage: str | None = None,
    to_stage: str | None = None, known_status: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Run the DAG in `root`. `force` reruns every stage; `from_stage` reruns it and all after;
    `to_stage` stops after that stage (runs only it and what it depends on); `known_status`:
    why each stage would rerun, as the caller has just seen it under the run lock (None: ask
    DVC here)."""
    root = str(Path(root).resolve())
    forced = stages_to_force(Path(root), force=force, from_stage=from_stage)
    selected = stages_to_run(Path(root), to_stage)
    tasks = {
        "download": download, "extract_frames": extract_frames, "build_dataset": build_dataset,
        "base_model": base_model, "warm_start": warm_start, "train": train,
        "evaluate": evaluate, "publish": publish,
    }
    # One `dvc status` for the whole DAG up front: unchanged stages skip without asking again.
    status = RunStatus(Path(root), selected, upstream_map(Path(root)), known_status)
    outcomes = []
    # One stage after the other, in DAG order: each reads what the previous ones wrote.
    for name in selected:
        outcome = tasks[name](root, force=name in forced, up_to_date=status.up_to_date(name))
        status.record(outcome)
        outcomes.append(outcome)

    report_run(outcomes)
    return outcomes
