"""Running one stage: first decide (skip, pull, run, push), then act through DVC.

dvc.yaml is the one description of what each stage depends on; the runner asks whether a stage
changed (`videorft.pipeline.status`), restores it from the remote when only its outputs are
missing (`videorft.pipeline.remote`), or runs it with `dvc repro --single-item`, and pushes what
it made. `videorft run`, Prefect's tasks and a plain `dvc repro` therefore agree.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from videorft.errors import EXIT_TRANSIENT, StageError
from videorft.pipeline import remote as rem
from videorft.pipeline.command import Log, dvc
from videorft.pipeline.lockfile import locked_entry, locked_stages
from videorft.pipeline.status import pipeline_status, reasons_for, stage_status, status_entries

#: A stage prints its JSON summary after this prefix; the runner reads it from DVC's output.
SUMMARY_PREFIX = "videorft-summary: "


#: Where a failed stage's output says why, most specific first: the stage's own one-line error
#: (the CLI's ``error: ...``), a Python exception's last line, then DVC's ``ERROR: ...``.
FAILURE_LINES = (
    re.compile(r"^error: (.+)$"),
    re.compile(r"^((?:\w+\.)*\w*(?:Error|Exception|Interrupt)\b.*)$"),
    re.compile(r"^ERROR: (.+)$"),
)


def failure_reason(lines: list[str], code: int) -> str:
    """Why a ``dvc repro`` failed, in one line, from its output."""
    for pattern in FAILURE_LINES:
        for line in reversed(lines):
            if match := pattern.match(line.strip()):
                return match.group(1)
    return f"dvc repro exited with {code} and gave no error line"


@dataclass
class StageOutcome:
    """What happened to one stage in a run."""

    stage: str
    ran: bool
    reasons: list[str] = field(default_factory=list)  # why DVC considered it changed
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    pulled: bool = False  # restored from the DVC remote instead of run (`ran` is False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Stages whose work is more than their outputs (publish uploads): DVC's run-cache must not
#: stand in for running them, or a republish to an emptied target would upload nothing.
SIDE_EFFECT_STAGES: frozenset[str] = frozenset({"publish"})


def nothing_to_do(
    root: Path, stages: Iterable[str], status: dict[str, list[str]] | None = None
) -> list[StageOutcome] | None:
    """Skipped outcomes for every stage when a run has nothing to do: all up to date (one
    `dvc status`, or `status` from `pipeline_status`) and, with a remote that takes pushes, all
    outputs already pushed. None when some stage needs work (to run, to pull or to push): then
    run the flow."""
    root = Path(root)
    stages = list(stages)
    if status is None:
        status = pipeline_status(root, stages)
    if any(status.get(stage, ["unknown"]) for stage in stages):
        return None
    remote = rem.remote_settings(root)
    if remote is not None and remote.push:
        url = rem.configure_remote(root, remote)
        lock = locked_stages(root)
        if url is not None and not all(
            rem.in_remote(root, url, stage, lock.get(stage, {})) for stage in stages
        ):
            return None
    return [StageOutcome(stage=stage, ran=False) for stage in stages]


def repro_stage(
    root: Path, stage: str, *, force: bool = False, log: Log | None = None,
    known_up_to_date: bool = False,
) -> StageOutcome:
    """Run one stage through DVC if it changed (or `force`); skip it otherwise.

    With a remote in params.yaml (`orchestration.remote`): a stage whose only change is missing
    outputs is pulled instead of run when the remote has them (`pull`), and a stage's outputs
    are pushed after it runs, or when up to date but not yet in the remote (`push`).
    `known_up_to_date`: the caller has just seen DVC call it unchanged (`RunStatus`); DVC is
    not asked again.
    """
    root = Path(root)
    remote = rem.remote_settings(root)
    url = rem.configure_remote(root, remote, log=log)
    locked = locked_entry(root, stage)
    if known_up_to_date and locked and not force:  # the run's RunStatus says so
        entries, reasons = [], []
    else:
        entries = status_entries(root, stage) if locked else []
        reasons = reasons_for(root, locked, entries) if locked else ["never run"]

    def pushed() -> None:
        """Push the stage's outputs unless the remote is known to have them already."""
        if url is None or remote is None or not remote.push:
            return
        now = locked_entry(root, stage)
        if now and not rem.in_remote(root, url, stage, now):
            rem.push_stage(root, stage, url, log=log)
            rem.mark_in_remote(root, url, stage, now)

    if not reasons and not force:
        pushed()
        return StageOutcome(stage=stage, ran=False)
    if url is not None and remote is not None and remote.pull and not force:
        if rem.pullable(entries):
            started = time.monotonic()
            note = rem.pull_stage(root, stage, url, log=log)
            left = stage_status(root, stage)
            if not left:
                rem.mark_in_remote(root, url, stage, locked)
                return StageOutcome(
                    stage=stage,
                    ran=False,
                    pulled=True,
                    reasons=[note],
                    seconds=round(time.monotonic() - started, 2),
                )
            # The remote lacked some output (pushed from elsewhere only in part): run it here.
            reasons = [*left, f"{note}; still changed, so it runs"]
        elif locked and log is not None:
            log(f"{stage}: changed ({'; '.join(reasons)}): not pulling stale outputs")

    started = time.monotonic()
    args = ["repro", "--single-item", stage] + (["--force"] if force else [])
    if stage in SIDE_EFFECT_STAGES:
        args.append("--no-run-cache")  # restoring its outputs would skip the side effect
    code, lines = dvc(args, root, log=log)
    summary: dict[str, Any] = {}
    for line in lines:
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
    if code != 0:
        # DVC reports the command's status ("... exited with 75"); 75 = worth another attempt.
        transient = any(f"exited with {EXIT_TRANSIENT}" in line for line in lines[-30:])
        # One line: Prefect logs the exception for the task and the flow, and the CLI prints it.
        # The output itself went to `log` line by line; without one, nobody saw it.
        unseen = "" if log is not None else "\n" + "\n".join(lines[-30:])
        raise StageError(f"stage {stage!r} failed: {failure_reason(lines, code)}{unseen}",
                         transient=transient, summary=summary or None)
    seconds = round(time.monotonic() - started, 2)
    pushed()
    return StageOutcome(
        stage=stage,
        ran=True,
        reasons=reasons or ["forced"],
        seconds=seconds,
        summary=summary,
    )
