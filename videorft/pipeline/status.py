"""Whether each stage is up to date, and why not: `dvc status` read into short reasons.

`pipeline_status` asks DVC once for the whole DAG; `RunStatus` keeps that answer for a run, so
unchanged stages are skipped without asking again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from videorft.errors import StageError
from videorft.pipeline.command import dvc
from videorft.pipeline.lockfile import locked_entry, locked_stages

#: A changed key shows its old and new values only when both are this short; longer values
#: (a list of sources, a long path) show as the key alone.
SHORT_VALUE_CHARS = 24
#: Changed keys named per section; the rest are counted ("and 12 more keys").
MAX_KEYS_SHOWN = 5


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted key; list items by index (`download.sources.0.options.seed`), so
    a change inside a list names the one key that changed."""
    items = tree.items() if isinstance(tree, dict) else (
        enumerate(tree) if isinstance(tree, list) and tree else None)
    if items is None:
        return {prefix.rstrip("."): tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(_flatten(value, f"{prefix}{key}."))
    return flat


def _change(key: str, before: Any, after: Any) -> str:
    old, new = repr(before), repr(after)
    if max(len(old), len(new)) <= SHORT_VALUE_CHARS:
        return f"param {key}: {old} -> {new}"
    return f"param {key} changed"


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
    changed = [key for key in sorted(before.keys() | after.keys())
               if before.get(key) != after.get(key)]
    shown = [_change(key, before.get(key), after.get(key)) for key in changed[:MAX_KEYS_SHOWN]]
    if len(changed) > MAX_KEYS_SHOWN:
        shown.append(f"and {len(changed) - MAX_KEYS_SHOWN} more keys of {section}")
    return shown


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


def dvc_status(root: Path, targets: list[str]) -> dict[str, list[Any]]:
    """Raw `dvc status --json` entries per changed stage (a stage that is absent is up to
    date); no targets: every stage of dvc.yaml in one DVC call."""
    code, lines = dvc(["status", "--json", *targets], root)
    text = "\n".join(lines).strip()
    if code != 0:
        raise StageError(f"dvc status {' '.join(targets)} failed:\n{text}")
    start = text.find("{")
    status = json.loads(text[start:]) if start >= 0 else {}
    return {name: list(entries) for name, entries in status.items()}


def status_entries(root: Path, stage: str) -> list[Any]:
    """The stage's raw `dvc status --json` entries (empty: up to date)."""
    return dvc_status(root, [stage]).get(stage, [])


def reasons_for(root: Path, locked: dict[str, Any], entries: list[Any]) -> list[str]:
    reasons: list[str] = []
    for entry in entries:
        reasons.extend(_describe_change(root, locked, entry))
    return reasons


def stage_status(root: Path, stage: str) -> list[str]:
    """Why `stage` would rerun (empty list: up to date)."""
    locked = locked_entry(root, stage)
    if not locked:
        return ["never run"]
    return reasons_for(root, locked, status_entries(root, stage))


def pipeline_status(root: Path, stages: Iterable[str]) -> dict[str, list[str]]:
    """Why each of `stages` would rerun (empty list: up to date), from a single `dvc status`
    for the whole DAG: one DVC start-up instead of one per stage."""
    lock = locked_stages(root)
    entries = dvc_status(root, [])
    status: dict[str, list[str]] = {}
    for stage in stages:
        locked = lock.get(stage, {})
        status[stage] = reasons_for(root, locked, entries.get(stage, [])) if locked else [
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
