"""The training flow a GPU worker runs (deployment `videorft-train/gpu`, prefect.yaml).

The pipeline (flows/pipeline.py, task `train`) submits it with `run_deployment` when
params.yaml names it in `orchestration.train_deployment`, passing its params.yaml and dvc.lock.
The worker's own checkout (the deployment's pull step) takes them, pulls the train stage's
inputs from the DVC remote, runs the stage through DVC, pushes its outputs and writes a handoff
record that the pipeline takes back (videorft/pipeline/handoff.py has the contract).

Run by hand in a checkout, with no parameters, it just trains there, as `videorft stage` would,
plus the remote push.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from tasks.stages import train
from videorft.pipeline import handoff


@task(name="prepare_checkout")
def prepare_checkout(root: str, params_yaml: str | None, dvc_lock: str | None) -> str | None:
    """The pipeline's params and dvc.lock into this checkout; the train inputs from the
    remote. Returns the remote url (None: no remote, this must be the pipeline's checkout)."""
    return handoff.prepare_worker(
        Path(root), params_yaml=params_yaml, dvc_lock=dvc_lock, stage="train",
        log=get_run_logger().info,
    )


@task(name="hand_back")
def hand_back(root: str, url: str | None, run_id: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """Outputs to the remote, and the record (dvc.lock entry, uncached outputs) for the
    pipeline."""
    return handoff.finish_worker(
        Path(root), "train", url, run_id, outcome, log=get_run_logger().info
    )


@flow(name="videorft-train", log_prints=True)
def train_flow(
    root: str = ".",
    force: bool = False,
    params_yaml: str | None = None,
    dvc_lock: str | None = None,
) -> dict[str, Any]:
    """Run the train stage in the checkout `root` (the worker's working directory) with the
    pipeline's `params_yaml` and `dvc_lock` (texts; None: keep this checkout's)."""
    project = str(Path(root).resolve())
    url = prepare_checkout(project, params_yaml, dvc_lock)
    outcome = train(project, force=force, in_process=True)
    return hand_back(project, url, str(flow_run.id), outcome)


if __name__ == "__main__":
    train_flow()
