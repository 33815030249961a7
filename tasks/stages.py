"""One Prefect task per stage. Thin on purpose: the work is in `videorft.stages`, the
dependency tracking in dvc.yaml; Prefect adds retries, logs, run history and artifacts."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import httpx
from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL

from videorft.errors import StageError
from videorft.params import OrchestrationParams, load_params
from videorft.pipeline import handoff
from videorft.pipeline.runner import repro_stage
from videorft.pipeline.status import stage_status

#: The terminal's view of the run (`videorft run` shows it; Prefect's and DVC's own logs go to
#: reports/run.log unless --verbose). INFO: one line as each stage starts and ends, and at each
#: quarter of a long stage's progress bar. DEBUG: every progress update (at most every
#: UPDATE_EVERY_S per stage), for the live table on a terminal. Each record carries the
#: stage's state in ``extra`` (see ``videorft.console.StageBoard``).
progress = logging.getLogger("videorft.progress")
UPDATE_EVERY_S = 0.5


def report(level: int, stage: str, state: str, message: str, *args: Any, **facts: Any) -> None:
    """A progress record: the line for the log and the facts for the live table."""
    progress.log(level, "%-15s " + message, stage, *args,
                 extra={"stage": stage, "state": state, **facts})


class StageProgress:
    """Reads a stage's output as DVC streams it: its progress bars (tqdm's "n/total [") and the
    trainer's latest reward (GRPO) or loss (warm start). Reported at every quarter as a line,
    and as a live update at most every UPDATE_EVERY_S: the long stages show they are moving
    without printing every refresh."""

    BAR = re.compile(r"(?:^|\s)(\d+)/(\d+) \[")
    METRIC = re.compile(r"'(reward|loss)': '([^']+)'")

    def __init__(self, stage: str, every: float = 0.25, clock=time.monotonic) -> None:
        self.stage, self.every, self.clock = stage, every, clock
        self.reported: dict[int, float] = {}  # per bar (known by its total): bars interleave
        self.metric: str | None = None
        self.updated_at = 0.0

    def __call__(self, line: str) -> None:
        metrics = dict(self.METRIC.findall(line))
        for name in ("reward", "loss"):  # GRPO's logs hold both: the reward is the news
            if name in metrics:
                self.metric = f"{name} {metrics[name]}"
                break
        match = self.BAR.search(line)
        if not match:
            return
        done, total = int(match.group(1)), int(match.group(2))
        if total <= 0:
            return
        facts = {"done": done, "total": total, "metric": self.metric}
        share, reported = done / total, self.reported.get(total, 0.0)
        if share >= reported + self.every and share < 1.0:
            self.reported[total] = share - share % self.every
            report(logging.INFO, self.stage, "running", "%3.0f%% (%d/%d)",
                   100 * self.reported[total], done, total, **facts)
        elif self.clock() - self.updated_at >= UPDATE_EVERY_S:
            report(logging.DEBUG, self.stage, "running", "%d/%d", done, total, **facts)
        else:
            return
        self.updated_at = self.clock()


#: A stage's or DVC's warning or error line: Python warnings (`x.py:3: UserWarning: ...`),
#: DVC's `WARNING:`/`ERROR:` and the CLI's one-line `error: ...`.
ALERT = re.compile(r"^(?:\S+:\d+: )?\w*(?:Warning|Error)\b|^(?:WARNING|ERROR|warning|error)\b")


def log_level(line: str) -> int:
    """WARNING for a warning or error line (shown on the terminal even without --verbose),
    else INFO (the log file and the Prefect UI only)."""
    return logging.WARNING if ALERT.match(line.lstrip()) else logging.INFO


def _run(stage: str, root: str, force: bool, up_to_date: bool = False) -> dict[str, Any]:
    """`up_to_date`: the flow already knows from DVC that the stage is unchanged (RunStatus)."""
    logger = get_run_logger()
    if not up_to_date:
        report(logging.INFO, stage, "running", "running ...")
    bars = StageProgress(stage)

    def log(line: str) -> None:
        logger.log(log_level(line), line)
        bars(line)

    try:
        outcome = repro_stage(
            Path(root), stage, force=force, log=log, known_up_to_date=up_to_date
        )
    except Exception:
        report(logging.INFO, stage, "failed", "failed")  # the error itself is logged above
        raise
    if outcome.ran:
        logger.info("%s ran in %.1f s (%s)", stage, outcome.seconds, "; ".join(outcome.reasons))
        report(logging.INFO, stage, "ran", "ran in %.1f s", outcome.seconds,
               seconds=outcome.seconds)
    elif outcome.pulled:
        logger.info("%s: %s, not recomputed", stage, "; ".join(outcome.reasons))
        report(logging.INFO, stage, "pulled", "pulled from the remote")
    else:
        logger.info("%s is up to date: skipped", stage)
        report(logging.INFO, stage, "skipped", "up to date, skipped")
    return outcome.to_dict()


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what another attempt can fix: a stage that exited with EXIT_TRANSIENT
    (network, throttling). A bad file or parameter fails the same way again: fail at once."""
    return bool(getattr(state.data, "transient", False))


# Downloads can fail for transient reasons (network, throttling): those retry with backoff.
@task(name="download", retries=3, retry_delay_seconds=[10, 30, 90],
      retry_condition_fn=_retry_if_transient)
def download(root: str, force: bool = False, up_to_date: bool = False) -> dict[str, Any]:
    return _run("download", root, force, up_to_date)


@task(name="extract_frames")
def extract_frames(root: str, force: bool = False, up_to_date: bool = False) -> dict[str, Any]:
    outcome = _run("extract_frames", root, force, up_to_date)
    if entries := outcome["summary"].get("quarantine"):
        create_table_artifact(
            key="quarantine", table=entries,
            description=f"{len(entries)} video(s) quarantined by frame extraction",
        )
    return outcome


@task(name="build_dataset")
def build_dataset(root: str, force: bool = False, up_to_date: bool = False) -> dict[str, Any]:
    return _run("build_dataset", root, force, up_to_date)


@task(name="base_model", retries=2, retry_delay_seconds=[30, 120],
      retry_condition_fn=_retry_if_transient)
def base_model(root: str, force: bool = False, up_to_date: bool = False) -> dict[str, Any]:
    # Retries: pinning a hub model downloads it (network).
    return _run("base_model", root, force, up_to_date)


@task(name="warm_start")
def warm_start(root: str, force: bool = False, up_to_date: bool = False) -> dict[str, Any]:
    return _run("warm_start", root, force, up_to_date)


@task(name="train")
def train(
    root: str, force: bool = False, in_process: bool = False, up_to_date: bool = False
) -> dict[str, Any]:
    """GRPO. No retries here: a failed run resumes from its checkpoint on the next run.

    With `orchestration.train_deployment` set (and not `in_process`, which the deployment's own
    flow passes), training runs on that Prefect deployment (a GPU work pool) instead of here;
    see `_train_on_deployment`."""
    params = load_params(Path(root) / "params.yaml")
    deployment = params.orchestration.train_deployment
    if deployment and not in_process and not (up_to_date and not force):
        outcome = _train_on_deployment(deployment, root, force, params.orchestration)
    else:
        outcome = _run("train", root, force, up_to_date)
    summary = dict(outcome["summary"])
    if outcome["ran"] and summary:
        curve = summary.pop("reward_curve", None)
        lines = [f"| {k} | {v} |" for k, v in summary.items()]
        create_markdown_artifact(
            key="videorft-train",
            markdown="| training | |\n|---|---|\n" + "\n".join(lines)
            + (f"\n\nReward curve: `{Path(root) / curve}`" if curve else ""),
            description="GRPO training summary",
        )
    return outcome


POLL_S = 5.0  # at most this long between two questions to the server: has training finished?
SERVER_GONE_S = 900.0  # give up waiting when the server did not answer for this long


def _train_on_deployment(
    name: str, root: str, force: bool, orchestration: OrchestrationParams
) -> dict[str, Any]:
    """Submit training to deployment `name` (flows/train.py on a GPU work pool), wait for it,
    then make this checkout consistent with what it produced (dvc.lock entry, outputs through
    the DVC remote; the contract is in videorft/pipeline/handoff.py). Nothing is submitted when
    DVC says training is up to date here."""
    logger = get_run_logger()
    project = Path(root)
    if not force and not stage_status(project, "train"):
        return _run("train", root, force)  # up to date: skipped (and pushed if need be)
    url = handoff.send_inputs(project, "train", log=logger.info)
    lock = project / "dvc.lock"
    parameters = {
        "force": force,
        "params_yaml": (project / "params.yaml").read_text(encoding="utf-8"),
        "dvc_lock": lock.read_text(encoding="utf-8") if lock.exists() else None,
    }
    try:
        # timeout=0: return the new flow run at once (to log it), then wait below.
        run = run_deployment(name, parameters=parameters, timeout=0)
    except ObjectNotFound:
        raise StageError(
            f"stage 'train': Prefect deployment {name!r} (params.yaml: "
            f"orchestration.train_deployment) does not exist on the server at "
            f"{PREFECT_API_URL.value() or 'a temporary local server (PREFECT_API_URL is unset)'}: "
            "run `prefect deploy --all` against the server the GPU worker polls, and point "
            "PREFECT_API_URL at it (docs/gpu-workers.md)"
        ) from None
    where = f"deployment {name!r}, flow run {run.name!r} ({run.id})"
    logger.info("train: submitted to %s; waiting up to %.0f s", where,
                orchestration.deployment_timeout_s)
    run = _wait(run.id, orchestration.deployment_timeout_s, where)
    state = run.state
    if state is None or not state.is_final():
        raise StageError(
            f"stage 'train': {where} did not finish within orchestration.deployment_timeout_s="
            f"{orchestration.deployment_timeout_s:g} s (it is {state.name if state else 'unknown'}"
            "); it goes on running on its worker: cancel it in Prefect or wait for it, then "
            "rerun the pipeline"
        )
    if not state.is_completed():
        raise StageError(
            f"stage 'train': {where} ended {state.name}"
            + (f": {state.message}" if state.message else "")
            + " (its logs are in the Prefect UI under that flow run)"
        )
    outcome = handoff.take_back(
        project, "train", url, str(run.id), where=where, log=logger.info
    )
    done = "ran" if outcome["ran"] else ("pulled" if outcome.get("pulled") else "was up to date")
    logger.info("train %s on %s", done, where)
    return outcome | {
        "reasons": [*outcome["reasons"], f"on {where}"],
        "deployment": name,
        "flow_run_id": str(run.id),
    }


def _wait(flow_run_id: Any, timeout_s: float, where: str) -> Any:
    """The flow run once it reached a final state, or as it is after `timeout_s`. Polls every
    second at first (a run that fails at once is reported at once), then every POLL_S. A
    server that stops answering for a while (a restart) is waited for, up to SERVER_GONE_S."""
    logger = get_run_logger()
    started = time.monotonic()
    deadline = started + timeout_s
    unreachable_since: float | None = None
    with get_client(sync_client=True) as client:
        while True:
            try:
                run = client.read_flow_run(flow_run_id)
                unreachable_since = None
            except (httpx.TransportError, PrefectHTTPStatusError) as exc:
                if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code < 500:
                    raise
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > SERVER_GONE_S:
                    raise StageError(
                        f"stage 'train': lost the Prefect server for {SERVER_GONE_S:g} s while "
                        f"waiting for {where} ({exc}); the run may still be going on its worker"
                    ) from None
                logger.warning("train: asking the server about %s failed (%s); retrying",
                               where, exc)
                time.sleep(POLL_S)
                continue
            now = time.monotonic()
            if (run.state is not None and run.state.is_final()) or now >= deadline:
                return run
            time.sleep(min(POLL_S, 1.0 + (now - started) / 10, deadline - now))


@task(name="evaluate")
def evaluate(root: str, force: bool = False, up_to_date: bool = False) -> dict[str, Any]:
    """Base -> trained comparison; the table becomes a Prefect artifact."""
    outcome = _run("evaluate", root, force, up_to_date)
    if table := outcome["summary"].get("table"):
        create_markdown_artifact(
            key="videorft-eval", markdown=table,
            description="Evaluation: base -> trained (the paper's metrics)",
        )
    return outcome


class GateFailed(StageError):
    """The publish gate said no: a verdict on the model, not a flaky upload; never retried."""


def _verdict_line(summary: dict[str, Any]) -> str:
    """The gate's verdict in one line: Prefect logs a task's and a flow's exception and the CLI
    prints it, so the stage's full output (already in the log once) is not repeated."""
    failures = (summary.get("gate") or {}).get("failures") or []
    counted = f" ({len(failures)} failure{'s' if len(failures) != 1 else ''})" if failures else ""
    return f"publish gate failed, nothing was published{counted}: " + (
        "; ".join(failures) or "see the gate report")


# Uploads can fail for transient reasons; publishing is idempotent (same manifest: no-op).
# A failed gate is a verdict (GateFailed, never transient): it fails at once.
@task(name="publish", retries=2, retry_delay_seconds=[10, 60],
      retry_condition_fn=_retry_if_transient)
def publish(root: str, force: bool = False, up_to_date: bool = False) -> dict[str, Any]:
    try:
        outcome = _run("publish", root, force, up_to_date)
    except StageError as exc:
        if (exc.summary or {}).get("published") is False:  # the gate's verdict, from the stage
            raise GateFailed(_verdict_line(exc.summary)) from None
        raise
    if (summary := outcome["summary"]).get("targets"):
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


def stage_task(name: str) -> Any:
    """The Prefect task of dvc.yaml's stage ``name``: the task of that name in this module."""
    found = globals().get(name)
    if not isinstance(found, Task):
        raise KeyError(f"no Prefect task for stage {name!r} in tasks/stages.py")
    return found
