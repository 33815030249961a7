"""One Prefect task per stage. Thin on purpose: the work is in `videorft.stages`, the
dependency tracking in dvc.yaml; Prefect adds retries, logs, run history and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from videorft.io import read_json
from videorft.params import load_params
from videorft.pipeline.dvc import repro_stage


def _run(stage: str, root: str, force: bool) -> dict[str, Any]:
    logger = get_run_logger()
    outcome = repro_stage(Path(root), stage, force=force, log=logger.info)
    if outcome.ran:
        logger.info("%s ran in %.1f s (%s)", stage, outcome.seconds, "; ".join(outcome.reasons))
    else:
        logger.info("%s is up to date: skipped", stage)
    return outcome.to_dict()


# Downloads fail for transient reasons (network, throttling): retry with backoff.
@task(name="download", retries=3, retry_delay_seconds=[10, 30, 90])
def download(root: str, force: bool = False) -> dict[str, Any]:
    return _run("download", root, force)


@task(name="extract_frames")
def extract_frames(root: str, force: bool = False) -> dict[str, Any]:
    outcome = _run("extract_frames", root, force)
    params = load_params(Path(root) / "params.yaml")
    quarantine = Path(root) / params.paths.frames / "quarantine.json"
    if quarantine.exists() and (entries := read_json(quarantine)):
        create_table_artifact(
            key="quarantine",
            table=[
                {"video": e.get("video") or str(e.get("frames")), "reason": e["reason"]}
                for e in entries
            ],
            description=f"{len(entries)} video(s) quarantined by frame extraction",
        )
    return outcome


@task(name="build_dataset")
def build_dataset(root: str, force: bool = False) -> dict[str, Any]:
    return _run("build_dataset", root, force)


def report_run(outcomes: list[dict[str, Any]]) -> None:
    """A run summary artifact: which stages ran, why, and how long they took."""
    rows = "\n".join(
        f"| {o['stage']} | {'ran' if o['ran'] else 'skipped (up to date)'} | "
        f"{'; '.join(o['reasons'])} | {o['seconds']} |"
        for o in outcomes
    )
    create_markdown_artifact(
        key="videorft-run",
        markdown="| stage | result | why | seconds |\n|---|---|---|---|\n" + rows,
        description="videorft pipeline run",
    )
