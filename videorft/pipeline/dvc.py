"""Thin, serialised wrapper around the DVC CLI.

Two DVC commands in one checkout collide on DVC's repository lock, and two pipeline runs would
trample each other's outputs, so every DVC call here takes a file lock, and a whole run takes
a second, non-blocking one (`run_lock`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from ruamel.yaml import YAML

from videorft.errors import EXIT_TRANSIENT, StageError, VideoRFTError
from videorft.pipeline.lockfile import locked_entry, locked_stages

SUMMARY_PREFIX = "videorft-summary: "
Log = Callable[[str], None]


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


def find_root(start: str | os.PathLike = ".") -> Path:
    """The project root: the nearest folder upwards holding dvc.yaml."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    raise VideoRFTError(f"no dvc.yaml in {here} or its parents: run videorft in a project checkout")


#: Stages whose work is more than their outputs (publish uploads): DVC's run-cache must not
#: stand in for running them, or a republish to an emptied target would upload nothing.
SIDE_EFFECT_STAGES: frozenset[str] = frozenset({"publish"})


def _lock_dir(root: Path) -> Path:
    path = root / ".dvc" / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _env() -> dict[str, str]:
    """The environment DVC runs stage commands in: this interpreter's scripts first on PATH."""
    env = os.environ.copy()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


#: DVC's message when another process holds its read/write lock on a stage's paths.
_BUSY = "is busy, it is being blocked by"
#: How long a DVC call waits for such a holder to go away before it gives up.
BUSY_WAIT_S = 20.0


def dvc(args: list[str], root: Path, *, log: Log | None = None,
        busy_wait_s: float | None = None) -> tuple[int, list[str]]:
    """Run `dvc ARGS` in `root` under the checkout's DVC lock; stream and return its output.

    DVC counts a process in its rwlock as alive while its PID exists, and a killed run's DVC
    process lingers as a zombie until init reaps it, so a rerun right after a `kill -9` can
    find the stage "busy". Such a call is retried (it failed before touching anything) for up
    to ``busy_wait_s`` seconds; a holder that really works on (a `dvc repro` by hand) then
    gets DVC's own message, which names it.
    """
    wait_s = BUSY_WAIT_S if busy_wait_s is None else busy_wait_s
    deadline = time.monotonic() + wait_s
    delay = 0.25
    while True:
        code, lines = _dvc_once(args, root, log)
        busy = code != 0 and any(_BUSY in line for line in lines)
        if not busy or time.monotonic() + delay > deadline:
            return code, lines
        if log is not None and delay == 0.25:
            log(f"DVC's lock on this stage is held by another process; waiting up to "
                f"{wait_s:.0f} s for it to exit")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


#: DVC's advice after every stage ("To track the changes with git, run: git add ...", and the
#: autostage tip): the same lines for every stage of every run, so not shown (still returned).
_GIT_HINT = re.compile(r"(To track the changes with git, run:|To enable auto staging, run:|"
                       r"\s+git add |\s+dvc config core\.autostage)")


def _dvc_once(args: list[str], root: Path, log: Log | None) -> tuple[int, list[str]]:
    lines: list[str] = []
    with FileLock(str(_lock_dir(root) / "videorft-dvc.lock")):
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", *args],
            cwd=root,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if log is not None and line.strip() and not _GIT_HINT.match(line):
                log(line)
        return proc.wait(), lines


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def _param_changes(
    root: Path, locked: dict[str, Any], params_file: str, section: str
) -> list[str]:
    """Key-level changes of a params section since the stage last ran (DVC reports the
    section only): compares the stage's dvc.lock entry `locked` with params.yaml."""
    params_path = root / params_file
    if not params_path.exists():
        return []
    before = _flatten({section: locked.get("params", {}).get(params_file, {}).get(section)})
    current: Any = YAML(typ="safe").load(params_path.read_text()) or {}
    for part in section.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    after = _flatten({section: current})
    return [
        f"param {key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


def _describe_change(root: Path, locked: dict[str, Any], entry: Any) -> list[str]:
    """Turn one `dvc status --json` entry into short human reasons."""
    if isinstance(entry, str):
        return [entry]
    reasons: list[str] = []
    for kind, changes in entry.items():
        if not isinstance(changes, dict):
            reasons.append(f"{kind}: {changes}")
            continue
        for item, how in changes.items():
            if not isinstance(how, dict):
                reasons.append(f"{kind}: {item} {how}")
                continue
            # params: {"params.yaml": {"section": "modified"}}: name the keys that changed.
            for section, what in how.items():
                detail = _param_changes(root, locked, item, section) if what == "modified" else []
                reasons.extend(detail or [f"param {section} {what}"])
    return reasons


def _dvc_status(root: Path, targets: list[str]) -> dict[str, list[Any]]:
    """Raw `dvc status --json` entries per changed stage (a stage that is absent is up to
    date); no targets: every stage of dvc.yaml in one DVC call."""
    code, lines = dvc(["status", "--json", *targets], root)
    text = "\n".join(lines).strip()
    if code != 0:
        raise StageError(f"dvc status {' '.join(targets)} failed:\n{text}")
    start = text.find("{")
    status = json.loads(text[start:]) if start >= 0 else {}
    return {name: list(entries) for name, entries in status.items()}


def _status_entries(root: Path, stage: str) -> list[Any]:
    """The stage's raw `dvc status --json` entries (empty: up to date)."""
    return _dvc_status(root, [stage]).get(stage, [])


def _reasons(root: Path, locked: dict[str, Any], entries: list[Any]) -> list[str]:
    reasons: list[str] = []
    for entry in entries:
        reasons.extend(_describe_change(root, locked, entry))
    return reasons


def stage_status(root: Path, stage: str) -> list[str]:
    """Why `stage` would rerun (empty list: up to date)."""
    locked = locked_entry(root, stage)
    if not locked:
        return ["never run"]
    return _reasons(root, locked, _status_entries(root, stage))


def pipeline_status(root: Path, stages: Iterable[str]) -> dict[str, list[str]]:
    """Why each of `stages` would rerun (empty list: up to date), from a single `dvc status`
    for the whole DAG: one DVC start-up instead of one per stage."""
    lock = locked_stages(root)
    entries = _dvc_status(root, [])
    status: dict[str, list[str]] = {}
    for stage in stages:
        locked = lock.get(stage, {})
        status[stage] = _reasons(root, locked, entries.get(stage, [])) if locked else [
            "never run"]
    return status


class RunStatus:
    """What a run already knows about its stages, so that it skips the unchanged ones without
    asking DVC once per stage: the whole DAG's `dvc status` taken once at the start. A stage
    that was up to date then stays so until one of its upstream stages runs (nothing else
    writes to the checkout during a run: `run_lock`); after that DVC is asked again."""

    def __init__(self, root: Path, stages: Iterable[str], upstream: dict[str, set[str]],
                 reasons: dict[str, list[str]] | None = None):
        """`reasons`: a `pipeline_status` the caller has just taken under the run lock (the
        CLI's nothing-to-do check); None: take it now."""
        self.reasons = pipeline_status(root, stages) if reasons is None else reasons
        self.upstream = upstream
        self.touched: set[str] = set()  # stages that ran or were pulled in this run

    def up_to_date(self, stage: str) -> bool:
        """True: known to be up to date (skip without asking DVC); False: ask DVC."""
        return not self.reasons.get(stage, ["unknown"]) and not (
            self.upstream.get(stage, set()) & self.touched
        )

    def record(self, outcome: dict[str, Any]) -> None:
        if outcome["ran"] or outcome.get("pulled"):
            self.touched.add(outcome["stage"])


def nothing_to_do(
    root: Path, stages: Iterable[str], status: dict[str, list[str]] | None = None
) -> list[StageOutcome] | None:
    """Skipped outcomes for every stage when a run has nothing to do: all up to date (one
    `dvc status`, or `status` from `pipeline_status`) and, with a remote that takes pushes, all
    outputs already pushed. None when some stage needs work (to run, to pull or to push): then
    run the flow."""
    from videorft.pipeline import remote as rem  # it imports this module

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
    from videorft.pipeline import remote as rem  # it imports this module

    root = Path(root)
    remote = rem.remote_settings(root)
    url = rem.configure_remote(root, remote, log=log)
    locked = locked_entry(root, stage)
    if known_up_to_date and locked and not force:  # the run's RunStatus says so
        entries, reasons = [], []
    else:
        entries = _status_entries(root, stage) if locked else []
        reasons = _reasons(root, locked, entries) if locked else ["never run"]

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
            # Typically a `cache: false` output: DVC keeps those out of the remote.
            reasons = [*left, f"{note}; still changed, so it runs"]
        elif locked and log is not None:
            log(f"{stage}: changed ({'; '.join(reasons)}): not pulling stale outputs")

    started = time.monotonic()
    args = ["repro", "--single-item", stage] + (["--force"] if force else [])
    if stage in SIDE_EFFECT_STAGES:
        args.append("--no-run-cache")  # restoring its outputs would skip the side effect
    code, lines = dvc(args, root, log=log)
    if code != 0:
        tail = "\n".join(lines[-30:])
        # DVC reports the command's status ("... exited with 75"); 75 = worth another attempt.
        transient = any(f"exited with {EXIT_TRANSIENT}" in line for line in lines[-30:])
        raise StageError(f"stage {stage!r} failed (dvc repro exit {code}):\n{tail}",
                         transient=transient)
    summary: dict[str, Any] = {}
    for line in lines:
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
    seconds = round(time.monotonic() - started, 2)
    pushed()
    return StageOutcome(
        stage=stage,
        ran=True,
        reasons=reasons or ["forced"],
        seconds=seconds,
        summary=summary,
    )


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Refuse a second pipeline run in the same checkout instead of corrupting the first."""
    lock = FileLock(str(_lock_dir(root) / "videorft-run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise VideoRFTError(
            f"another videorft run is in progress in {root}; wait for it to finish and try "
            "again (the lock is released as soon as that process exits)"
        ) from None
    try:
        yield
    finally:
        lock.release()
