"""The publishable package: weights, processor, model card, metrics, lineage and a manifest.

Layout (``paths.package``)::

    model.safetensors | model-0000x-of-0000y.safetensors + model.safetensors.index.json
    config.json, generation_config.json, tokenizer/processor files, chat_template.jinja
    training_summary.json   how the run went (documents the run; kept)
    README.md               model card: HF front matter, metrics, recipe, lineage, gate
    metrics.json            the evaluate stage's metrics, as they were gated
    lineage.json            git commit, DVC hashes, versions (see lineage.py)
    manifest.json           written last: name, version, sha256 + size of every other file

``version`` is the first 12 hex digits of a SHA-256 over the sorted (path, sha256) pairs of all
other files: the same content always gets the same version, so re-publishing is a no-op. No
file holds the build time, the manifest included: the package folder is a DVC output, and the
same inputs give the same bytes, so the same DVC hash. Pickles (``*.bin`` such as
training_args.bin, ``*.pt``) and hidden files are never packaged: loading a pickle runs code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from videorft.errors import DataValidationError, StageError, UnsafePathError
from videorft.io import (
    CHUNK_BYTES,
    atomic_write_json,
    atomic_write_text,
    check_relative_path,
    replace_dir,
    sha256_file,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CARD = "README.md"
METRICS = "metrics.json"
LINEAGE = "lineage.json"
#: Files the package writes itself; a model folder's own copies are not packaged.
GENERATED = (CARD, METRICS, LINEAGE, MANIFEST)
#: Pickled objects (training_args.bin, optimizer.pt, ...): unsafe to load, never packaged.
EXCLUDED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
VERSION_LENGTH = 12
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PackageIntegrityError(StageError):
    """A package's files do not match its manifest (missing, changed or unlisted files)."""


# --------------------------------------------------------------------------- manifest helpers


def compute_version(files: dict[str, dict[str, Any]]) -> str:
    """Content version: sha256 over the sorted (path, sha256) pairs, first 12 hex digits."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\0{files[path]['sha256']}\n".encode())
    return digest.hexdigest()[:VERSION_LENGTH]


def same_package(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two manifests describe the same package: the same name, version and files
    (anything else a manifest holds, such as the build time older packages recorded, does not
    count)."""
    if not a or not b:
        return False
    return all(a.get(key) == b.get(key) for key in ("name", "version", "files"))


def read_manifest(folder: str | os.PathLike, fs: Any = None) -> dict[str, Any]:
    """``manifest.json`` of a local package folder, or of ``folder`` on fsspec ``fs``."""
    path = f"{str(folder).rstrip('/')}/{MANIFEST}"
    try:
        if fs is None:
            text = Path(path).read_text(encoding="utf-8")
        else:
            with fs.open(path, "rb") as handle:
                text = handle.read().decode("utf-8")
        manifest = json.loads(text)
    except FileNotFoundError:
        raise PackageIntegrityError(
            f"{path}: no manifest (not a package, or an incomplete upload)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageIntegrityError(f"{path}: not a valid manifest ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise PackageIntegrityError(f"{path}: not a valid manifest (no 'files' mapping)")
    for rel in manifest["files"]:  # names become paths on copy: none may escape the folder
        try:
            if check_relative_path(rel) != rel or rel == MANIFEST:
                raise UnsafePathError(f"path {rel!r} is not in normal form")
        except DataValidationError as exc:
            raise PackageIntegrityError(f"{path}: bad file name: {exc}") from None
    return manifest


def size_and_sha256_fs(fs: Any, path: str) -> tuple[int, str]:
    """(size, sha256) of a file on an fsspec filesystem, streamed (one HEAD + GETs on S3)."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        size = handle.size
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return size, digest.hexdigest()


def _list_files(folder: str, fs: Any) -> set[str]:
    """Relative POSIX paths of the files under ``folder`` (hidden entries left out)."""
    if fs is None:
        base = Path(folder)
        found = {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()}
    else:
        base = folder.rstrip("/")
        found = {str(p)[len(base) + 1 :] for p in fs.find(base)}
    return {p for p in found if not any(part.startswith(".") for part in p.split("/"))}


def verify_package(folder: str | os.PathLike, fs: Any = None) -> dict[str, Any]:
    """Recompute every file's sha256 and size against ``manifest.json``; return the manifest.

    ``folder`` is a local folder, or a path on the fsspec filesystem ``fs`` (``bucket/key``
    for s3fs). Raises :class:`PackageIntegrityError` naming every missing, changed or unlisted
    file, or a version that does not match the files.
    """
    folder = str(folder).rstrip("/")
    if fs is not None:
        folder = fs._strip_protocol(folder).rstrip("/")  # "s3://b/k" -> "b/k", as find() lists
    manifest = read_manifest(folder, fs)
    files: dict[str, dict[str, Any]] = manifest["files"]
    problems: list[str] = []
    present = _list_files(folder, fs)
    for rel, expected in sorted(files.items()):
        if rel not in present:
            problems.append(f"{rel}: missing")
            continue
        path = f"{folder}/{rel}"
        if fs is None:
            size, sha = os.path.getsize(path), sha256_file(path)
        else:
            size, sha = size_and_sha256_fs(fs, path)
        if size != expected.get("size"):
            problems.append(f"{rel}: size {size}, manifest says {expected.get('size')}")
        elif sha != expected.get("sha256"):
            problems.append(f"{rel}: sha256 {sha[:12]}..., manifest says "
                            f"{str(expected.get('sha256'))[:12]}...")
    problems += [f"{rel}: not in the manifest" for rel in sorted(present - set(files) - {MANIFEST})]
    if manifest.get("version") != compute_version(files):
        problems.append(f"{MANIFEST}: version {manifest.get('version')!r} does not match its "
                        "files")
    if problems:
        raise PackageIntegrityError(
            f"{folder}: package does not match its manifest: " + "; ".join(problems)
        )
    return manifest


# --------------------------------------------------------------------------- building


def _model_files(model_dir: Path) -> list[str]:
    """The files of ``model_dir`` to package (relative POSIX paths), checked for completeness."""
    if not (model_dir / "config.json").is_file():
        raise StageError(f"{model_dir}: no config.json, not a model folder (run the train stage)")
    chosen: list[str] = []
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        if rel.endswith(EXCLUDED_SUFFIXES):
            log.info("package: leaving out %s (pickle, not safe to load)", rel)
        elif rel in GENERATED:
            log.info("package: leaving out the model folder's %s (the package writes its own)",
                     rel)
        else:
            chosen.append(rel)
    if not any(rel.endswith(".safetensors") for rel in chosen):
        raise StageError(f"{model_dir}: no *.safetensors weights to publish")
    for index in (rel for rel in chosen if rel.endswith(".safetensors.index.json")):
        weight_map = json.loads((model_dir / index).read_text(encoding="utf-8")).get(
            "weight_map", {})
        parent = PurePosixPath(index).parent
        missing = sorted({(parent / shard).as_posix() for shard in weight_map.values()}
                         - set(chosen))
        if missing:
            raise StageError(f"{model_dir / index}: shards missing: {', '.join(missing)}")
    return chosen


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path (so the card can name its base model)."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def _yaml_dump(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _dvc_rows(lineage: dict[str, Any]) -> list[str]:
    rows = ["| Output | Path | DVC stage | Hash |", "|---|---|---|---|"]
    for field, record in (lineage.get("dvc") or {}).items():
        if record:
            algorithm = record.get("hash", "md5")
            rows.append(f"| {field} | `{record['path']}` | {record.get('stage', '')} | "
                        f"{algorithm}: `{record.get(algorithm)}` |")
        else:
            rows.append(f"| {field} | | | not in dvc.lock |")
    return rows


def model_card(
    *, name: str, metrics: dict[str, Any], table_md: str, params_dict: dict[str, Any],
    lineage: dict[str, Any], gate_markdown: str,
) -> str:
    """README.md: Hugging Face front matter, then metrics, gate, recipe and lineage."""
    model = params_dict.get("model") or {}
    base = str(model.get("name_or_path") or "")
    front: dict[str, Any] = {"library_name": "transformers",
                             "pipeline_tag": "video-text-to-text"}
    if is_hub_id(base):
        front["base_model"] = base
    front["tags"] = ["videorft", "grpo", "video"]
    recipe = {key: params_dict[key] for key in ("model", "warm_start", "train")
              if key in params_dict}
    git = lineage.get("git") or {}
    commit = git.get("commit") or "unknown (not built from a git checkout)"
    dirty = " (with uncommitted changes)" if git.get("dirty") else ""
    versions = ", ".join(f"{k} {v}" for k, v in (lineage.get("versions") or {}).items() if v)
    base_info = lineage.get("base_model") or {}
    base_line = base or "unknown"
    if base_info.get("commit"):
        base_line += f" @ `{base_info['commit']}`"
    lines = [
        "---", _yaml_dump(front).rstrip(), "---", "",
        f"# {name}", "",
        f"A video LLM fine-tuned with GRPO (rule-based rewards, reproducing VideoChat-R1) by "
        f"videorft {lineage.get('videorft', '')}, starting from {base_line}.", "",
        "## Evaluation", "",
        f"Held-out split: `{metrics.get('split', 'unknown')}`; baseline: "
        f"`{metrics.get('baseline', 'unknown')}`. Metrics are fractions in [0, 1].", "",
        table_md.strip(), "",
        gate_markdown.strip(), "",
        "## Training recipe", "",
        "The `model`, `warm_start` and `train` sections of params.yaml:", "",
        "```yaml", _yaml_dump(recipe).rstrip(), "```", "",
        "## Data lineage", "",
        f"- Code: git commit `{commit}`{dirty}",
        f"- Tools: videorft {lineage.get('videorft', 'unknown')}; {versions}",
        "- Data and models, as recorded in dvc.lock (`dvc checkout` at that commit restores "
        "them):", "",
        *_dvc_rows(lineage), "",
        "`lineage.json` holds the same, `metrics.json` the full evaluation, and `manifest.json` "
        "the SHA-256 of every file of this package.", "",
        "## Usage", "",
        "```python",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        'model = AutoModelForImageTextToText.from_pretrained("PATH_OR_REPO", dtype="auto")',
        'processor = AutoProcessor.from_pretrained("PATH_OR_REPO")',
        "```", "",
    ]
    return "\n".join(lines)


def readable(path: Path) -> None:
    """rw-r--r--: atomic writes create 0600 temp files; a package is meant to be shared."""
    path.chmod(0o644)


def _copy(src: Path, dest: Path) -> None:
    """Copy (not hard-link: a later in-place rewrite of the source must not change a built
    package behind its manifest's back)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def build_package(
    model_dir: Path, out_dir: Path, *, name: str, metrics: dict[str, Any], table_md: str,
    params_dict: dict[str, Any], lineage: dict[str, Any], gate_report: Any,
) -> dict[str, Any]:
    """Build the package in a temp sibling of ``out_dir`` and move it into place; return the
    manifest. ``gate_report`` is a :class:`~videorft.publish.gate.GateReport` (or None)."""
    from videorft.publish.gate import format_gate_report

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    files = _model_files(model_dir)
    gate_markdown = format_gate_report(gate_report) if gate_report is not None else (
        "## Publish gate\n\nNot checked.\n")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the package unreadable to others
        for rel in files:
            _copy(model_dir / rel, tmp / rel)
        atomic_write_text(tmp / CARD, model_card(
            name=name, metrics=metrics, table_md=table_md, params_dict=params_dict,
            lineage=lineage, gate_markdown=gate_markdown))
        atomic_write_json(tmp / METRICS, metrics)
        atomic_write_json(tmp / LINEAGE, lineage)
        entries = {
            p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(tmp.rglob("*")) if p.is_file()
        }
        manifest = {"name": name, "version": compute_version(entries), "files": entries}
        atomic_write_json(tmp / MANIFEST, manifest)  # last: a manifest means complete
        for generated in GENERATED:
            readable(tmp / generated)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("package %s version %s: %d files in %s", name, manifest["version"], len(entries),
             out_dir)
    return manifest
