"""dvc.lock, read and written in one place: what each stage last ran with and produced.

DVC owns the file; we read it to decide what is up to date, to hand a stage's entry to a GPU
worker and back, and to record the lineage of a published model. A file that is not valid
YAML, or not a lock file, is one clear error naming it, never a parser traceback.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from videorft.errors import ConfigError, one_line
from videorft.io import atomic_write_text

LOCK_FILE = "dvc.lock"


def _empty() -> dict[str, Any]:
    return {"schema": "2.0", "stages": {}}


def read_lock(root: Path, *, roundtrip: bool = False) -> Any:
    """The project's dvc.lock (an empty lock if there is none). ``roundtrip`` keeps the
    file's layout for :func:`write_lock`. Raises ConfigError naming the file if it is broken."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return _empty()
    try:
        lock = YAML(typ="rt" if roundtrip else "safe").load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # ruamel raises many error types for bad YAML
        raise ConfigError(f"{path}: not valid YAML ({one_line(exc)}); restore it with "
                          "`git checkout dvc.lock`, or delete it to rerun every stage") from None
    if lock is None:
        return _empty()
    if not isinstance(lock, dict) or not isinstance(lock.get("stages") or {}, dict):
        raise ConfigError(f"{path}: not a DVC lock file (expected a mapping with 'stages'); "
                          "restore it with `git checkout dvc.lock`, or delete it")
    if roundtrip and lock.get("stages") is None:
        lock["stages"] = {}
    return lock


def locked_stages(root: Path) -> dict[str, Any]:
    """Every stage's dvc.lock entry: ``{stage: {"cmd", "deps", "params", "outs"}}``."""
    return read_lock(root).get("stages") or {}


def locked_entry(root: Path, stage: str) -> dict[str, Any]:
    """The stage's dvc.lock entry (what it last ran with and produced); empty if none."""
    return locked_stages(root).get(stage) or {}


def write_lock(root: Path, lock: Any) -> None:
    """Write a lock read with ``roundtrip=True`` back, atomically, hashes and paths unfolded."""
    yaml = YAML()
    yaml.width = 4096  # never fold a path or a hash
    buffer = io.StringIO()
    yaml.dump(lock, buffer)
    atomic_write_text(Path(root) / LOCK_FILE, buffer.getvalue())
