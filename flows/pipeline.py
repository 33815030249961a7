"""The videorft pipeline flow: download -> extract_frames -> build_dataset.

Each task asks DVC whether its stage changed and runs it only then, so re-running the flow
after a failure picks up at the failed stage. Later stages (train, evaluate, publish) slot in
after build_dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from tasks.stages import build_dataset, download, extract_frames, report_run
from videorft.stages import stages_to_force


@flow(name="videorft-pipeline", log_prints=True)
def pipeline(
    root: str = ".", force: bool = False, from_stage: str | None = None
) -> list[dict[str, Any]]:
    """Run the DAG in `root`. `force` reruns every stage; `from_stage` reruns it and all after."""
    root = str(Path(root).resolve())
    forced = stages_to_force(force=force, from_stage=from_stage)

    outcomes = [download(root, force="download" in forced)]
    outcomes.append(extract_frames(root, force="extract_frames" in forced))
    outcomes.append(build_dataset(root, force="build_dataset" in forced))

    report_run(outcomes)
    return outcomes
