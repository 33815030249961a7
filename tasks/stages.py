"""One Prefect task per stage. Thin on purpose: the work is in `videorft.stages`, the
dependency tracking in dvc.yaml; Prefect adds retries, logs, run history and artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from videorft.errors import StageError
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


@task(name="base_model", retries=2, retry_delay_seconds=[30, 120])
def base_model(root: str, force: bool = False) -> dict[str, Any]:
    # Retries: pinning a hub model downloads it (network).
    return _run("base_model", root, force)


@task(name="warm_start")
def warm_start(root: str, force: bool = False) -> dict[str, Any]:
    return _run("warm_start", root, force)


@task(name="train")
def train(root: str, force: bool = False) -> dict[str, Any]:
    """GRPO. No retries here: a failed run resumes from its checkpoint on the next run."""
    outcome = _run("train", root, force)
    params = load_params(Path(root) / "params.yaml")
    summary_path = Path(root) / params.paths.trained / "training_summary.json"
    if outcome["ran"] and summary_path.exists():
        summary = read_json(summary_path)
        lines = [f"| {k} | {v} |" for k, v in summary.items() if not isinstance(v, dict | list)]
        create_markdown_artifact(
            key="videorft-train",
            markdown="| training | |\n|---|---|\n" + "\n".join(lines)
            + f"\n\nReward curve: `{Path(root) / params.paths.reports / 'train/reward_curve.png'}`",
            description="GRPO training summary",
        )
    return outcome


@task(name="evaluate")
def evaluate(root: str, force: bool = False) -> dict[str, Any]:
    """Base -> trained comparison; the table becomes a Prefect artifact."""
    outcome = _run("evaluate", root, force)
    params = load_params(Path(root) / "params.yaml")
    table = Path(root) / params.paths.evaluation / "table.md"
    if outcome["ran"] and table.exists():
        create_markdown_artifact(
            key="videorft-eval", markdown=table.read_text(encoding="utf-8"),
            description="Evaluation: base -> trained (the paper's metrics)",
        )
    return outcome


class GateFailed(StageError):
    """The publish gate said no: a verdict on the model, not a flaky upload; never retried."""


def _retry_unless_gate_failed(task: Any, task_run: Any, state: Any) -> bool:
    return not isinstance(state.data, GateFailed)


# Uploads fail for transient reasons; publishing is idempotent (same manifest: no-op).
@task(name="publish", retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=_retry_unless_gate_failed)
def publish(root: str, force: bool = False) -> dict[str, Any]:
    params = load_params(Path(root) / "params.yaml")
    report = Path(root) / params.paths.reports / "publish.json"
    try:
        outcome = _run("publish", root, force)
    except StageError as exc:
        if report.exists() and read_json(report).get("published") is False:
            raise GateFailed(str(exc)) from None
        raise
    if outcome["ran"] and report.exists() and (summary := read_json(report)).get("targets"):
        rows = "\n".join(f"| {t['type']} | {t['status']} | `{t['location']}` |"
                         for t in summary["targets"])
        create_markdown_artifact(
            key="videorft-publish",
            markdown=f"**{summary['name']}** version `{summary['version']}`\n\n"
            "| target | status | location |\n|---|---|---|\n" + rows,
            description="Where the model was published",
        )
    return outcome


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
