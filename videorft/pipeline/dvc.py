"""Thin, serialised wrapper around the DVC CLI.

Two DVC commands in one checkout collide on DVC's repository lock, and two pipeline runs would
trample each other's outputs, so every DVC call here takes a file lock, and a whole run takes
a second, non-blocking one (`run_lock`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from ruamel.yaml import YAML

from videorft.errors import StageError, VideoRFTError

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_root(start: str | os.PathLike = ".") -> Path:
    """The project root: the nearest folder upwards holding dvc.yaml."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    raise VideoRFTError(f"no dvc.yaml in {here} or its parents: run videorft in a project checkout")


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


def dvc(args: list[str], root: Path, *, log: Log | None = None) -> tuple[int, list[str]]:
    """Run `dvc ARGS` in `root` under the checkout's DVC lock; stream and return its output."""
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
            if log is not None and line.strip():
                log(line)
        return proc.wait(), lines


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def _locked_stage(root: Path, stage: str) -> dict[str, Any]:
    """The stage's entry in dvc.lock (what it last ran with); empty if it never ran."""
    lock_path = root / "dvc.lock"
    if not lock_path.exists():
        return {}
    return (YAML(typ="safe").load(lock_path.read_text()) or {}).get("stages", {}).get(stage, {})


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


def stage_status(root: Path, stage: str) -> list[str]:
    """Why `stage` would rerun (empty list: up to date)."""
    locked = _locked_stage(root, stage)
    if not locked:
        return ["never run"]
    code, lines = dvc(["status", "--json", stage], root)
    text = "\n".join(lines).strip()
    if code != 0:
        raise StageError(f"dvc status {stage} failed:\n{text}")
    start = text.find("{")
    status = json.loads(text[start:]) if start >= 0 else {}
    reasons: list[str] = []
    for entry in status.get(stage, []):
        reasons.extend(_describe_change(root, locked, entry))
    return reasons


def repro_stage(
    root: Path, stage: str, *, force: bool = False, log: Log | None = None
) -> StageOutcome:
    """Run one stage through DVC if it changed (or `force`); skip it otherwise."""
    reasons = stage_status(root, stage)
    if not reasons and not force:
        return StageOutcome(stage=stage, ran=False)
    started = time.monotonic()
    args = ["repro", "--single-item", stage] + (["--force"] if force else [])
    code, lines = dvc(args, root, log=log)
    if code != 0:
        tail = "\n".join(lines[-30:])
        raise StageError(f"stage {stage!r} failed (dvc repro exit {code}):\n{tail}")
    summary: dict[str, Any] = {}
    for line in lines:
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
    return StageOutcome(
        stage=stage,
        ran=True,
        reasons=reasons or ["forced"],
        seconds=round(time.monotonic() - started, 2),
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
