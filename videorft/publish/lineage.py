"""Where a published model came from: code commit, DVC hashes of its data and model, versions.

The DVC hashes are read from ``dvc.lock`` (what ``dvc repro`` recorded for each stage's outs),
so a published model names the exact dataset, frames, checkpoints and weights it was built
from; ``dvc checkout`` of that commit brings them back. Nothing from the environment goes in:
environment variables hold credentials. Nor does the time of the build: the package is a DVC
output, and the same inputs must give the same bytes (when it was published is the
destination's record, e.g. the hub commit or the object's modification time).
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import videorft
from videorft.errors import ConfigError
from videorft.params import Params
from videorft.pipeline.lockfile import locked_stages

log = logging.getLogger(__name__)

#: The outs whose DVC hashes the lineage records, by ``paths`` field.
LINEAGE_PATHS = ("dataset", "frames", "base_model", "warm_start", "checkpoints", "trained")
#: Packages whose versions decide how a model trains and loads.
PACKAGES = ("torch", "transformers", "trl")


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def git_state(root: Path) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}``; both null outside a git work tree (or without git)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(root, "status", "--porcelain")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def _norm(path: str) -> str:
    return PurePosixPath(str(path).replace("\\", "/")).as_posix().rstrip("/")


def dvc_outs(root: Path) -> dict[str, dict[str, Any]]:
    """Every out recorded in ``dvc.lock``: ``{path: {"stage", "hash", "md5", "size", ...}}``."""
    try:
        stages = locked_stages(root)
    except ConfigError as exc:  # a broken lock file must not stop publishing; it is reported
        log.warning("%s; lineage has no DVC hashes", exc)
        return {}
    outs: dict[str, dict[str, Any]] = {}
    for stage, entry in stages.items():
        for out in (entry or {}).get("outs") or []:
            if not isinstance(out, dict) or "path" not in out:
                continue
            algorithm = out.get("hash") if isinstance(out.get("hash"), str) else "md5"
            digest = out.get(algorithm) or out.get("md5") or out.get("etag")
            outs[_norm(out["path"])] = {
                "stage": stage,
                "hash": algorithm,
                algorithm: digest,
                **{k: out[k] for k in ("size", "nfiles") if k in out},
            }
    return outs


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def collect_lineage(root: Path, params: Params) -> dict[str, Any]:
    """The lineage of ``params.paths.trained`` in project ``root`` (JSON-able).

    ``dvc`` maps each of :data:`LINEAGE_PATHS` to its dvc.lock record, or null when dvc.lock
    has none (the stage never ran under DVC).
    """
    root = Path(root)
    outs = dvc_outs(root)
    dvc: dict[str, Any] = {}
    for field in LINEAGE_PATHS:
        path = _norm(getattr(params.paths, field))
        record = outs.get(path)
        dvc[field] = {"path": path, **record} if record else None
    base_info = root / params.paths.base_model / "model_info.json"
    base_model: dict[str, Any] = {"name_or_path": params.model.name_or_path,
                                  "revision": params.model.revision}
    if base_info.is_file():
        import json

        info = json.loads(base_info.read_text(encoding="utf-8"))
        # "load"/"path" are machine-specific absolute paths: not lineage.
        base_model.update({k: v for k, v in info.items() if k in ("source", "repo_id", "commit",
                                                                  "fingerprint", "seed")})
    return {
        "git": git_state(root),
        "dvc": dvc,
        "base_model": base_model,
        "videorft": videorft.__version__,
        "versions": package_versions(),
    }


def published_lineage(root: Path, params: Params) -> dict[str, Any] | None:
    """The lineage of the model last published from this checkout: its name, version, where
    it went, and what it was built from (``None`` when nothing was published)."""
    from videorft.io import read_json

    report = Path(root) / params.paths.reports / "publish.json"
    package = Path(root) / params.paths.package
    if not report.is_file() or not (package / "lineage.json").is_file():
        return None
    summary = read_json(report)
    if not summary.get("published"):
        return None
    lineage = read_json(package / "lineage.json")
    return {
        "name": summary.get("name"),
        "version": summary.get("version"),
        "targets": [t.get("location") for t in summary.get("targets") or []],
        "git": lineage.get("git"),
        "base_model": lineage.get("base_model"),
        "dvc": {name: (out or {}).get("md5") for name, out in (lineage.get("dvc") or {}).items()},
    }
