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
from videorft.stages import stages_to_force


@flow(name="videorft-pipeline", log_prints=True)
def pipeline(
    root: str = ".", force: bool = False, from_stage: str | None = None
) -> list[dict[str, Any]]:
    """Run the DAG in `root`. `force` reruns every stage; `from_stage` reruns it and all after."""
    root = str(Path(root).resolve())
    forced = stages_to_force(Path(root), force=force, from_stage=from_stage)

    outcomes = [download(root, force="download" in forced)]
    outcomes.append(extract_frames(root, force="extract_frames" in forced))
    outcomes.append(build_dataset(root, force="build_dataset" in forced))
    outcomes.append(base_model(root, force="base_model" in forced))
    outcomes.append(warm_start(root, force="warm_start" in forced))
    outcomes.append(train(root, force="train" in forced))
    outcomes.append(evaluate(root, force="evaluate" in forced))
    outcomes.append(publish(root, force="publish" in forced))

    report_run(outcomes)
    return outcomes
