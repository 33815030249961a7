"""The videorft pipeline flow: dvc.yaml's stages in order, each one a Prefect task.

Each task asks DVC whether its stage changed and runs it only then, so re-running the flow
after a failure picks up at the failed stage (training resumes from its last checkpoint).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from tasks.stages import report_run, stage_task
from videorft.pipeline.status import RunStatus
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
    # One `dvc status` for the whole DAG up front: unchanged stages skip without asking again.
    status = RunStatus(Path(root), selected, upstream_map(Path(root)), known_status)
    outcomes = []
    # One stage after the other, in DAG order: each reads what the previous ones wrote.
    for name in selected:
        outcome = stage_task(name)(root, force=name in forced, up_to_date=status.up_to_date(name))
        status.record(outcome)
        outcomes.append(outcome)

    report_run(outcomes)
    return outcomes
