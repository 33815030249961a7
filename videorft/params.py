"""params.yaml: the single source of every knob, validated, with named presets.

Layout of params.yaml (see the file itself for every field's meaning):

- ``preset``: the name of the preset last applied (informational).
- ``paths``: where each stage reads and writes; dvc.yaml interpolates the same keys.
- one section per stage (``download``, ``extract_frames``, ``build_dataset``, ...): the
  *effective* values, which is what DVC tracks, key by key, to decide what to rerun.
- ``presets``: named overlays (``tiny-cpu``, ``videochat-r1``, ...). Applying one writes its
  values into the stage sections, as ``dvc exp run -S`` would, so DVC sees exactly what
  changed. Every preset sets the same keys, so switching presets is reversible.

Edits keep the file's comments (ruamel.yaml round trip) and are written atomically.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML

from videorft.errors import ConfigError
from videorft.io import atomic_write_text

PARAMS_FILE = "params.yaml"
SOURCE_TYPES = ("synthetic", "charades_sta", "activitynet", "got10k", "nextgqa", "mcq")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PathsParams(_Section):
    """Where the stages read and write, relative to the project root."""

    raw: str = Field(
        "data/raw", description="Downloaded (or generated) datasets, one folder per source."
    )
    records: str = Field(
        "data/records.jsonl", description="All sources' samples in the canonical record schema."
    )
    frames: str = Field(
        "data/frames", description="Frame store: sampled, resized frames per video."
    )
    dataset: str = Field(
        "data/dataset", description="train.jsonl / val.jsonl with prompts, read by the trainer."
    )
    reports: str = Field("reports", description="Small JSON reports that DVC tracks as metrics.")


class SourceParams(_Section):
    """One dataset to fetch and convert to canonical records."""

    name: str = Field(description="Unique name: folder under paths.raw and prefix of record ids.")
    type: Literal[SOURCE_TYPES] = Field(
        description="Native format: " + ", ".join(SOURCE_TYPES) + "."
    )  # type: ignore[valid-type]
    uri: str | None = Field(
        None,
        description="Where to fetch it: a local path, http(s)://, s3://bucket/prefix or "
        "hf://datasets/OWNER/NAME[@REVISION][/SUBDIR]. Archives (.zip, .tar[.gz|.bz2|.xz]) are "
        "unpacked. Not used by 'synthetic'.",
    )
    sha256: str | None = Field(
        None, description="Expected SHA-256 of a downloaded file (http/s3 archives)."
    )
    annotation: str | None = Field(
        None, description="Annotation file (or folder, for got10k) inside the fetched data."
    )
    video_dir: str = Field("videos", description="Folder of the videos inside the fetched data.")
    video_ext: str = Field(".mp4", description="File extension of the videos.")
    split: Literal["train", "val", "test"] | None = Field(
        None,
        description="Force every sample of this source into one split; null: build_dataset "
        "splits it.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Source-specific options (synthetic: generator settings; got10k: fps, "
        "max_sequences).",
    )


class S3Params(_Section):
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (MinIO, SeaweedFS, ...); credentials come from the "
        "usual AWS environment variables or profile, never from this file.",
    )
    anon: bool = Field(False, description="Anonymous access to public buckets.")


class DownloadParams(_Section):
    """Stage `download`: fetch every source and convert it to canonical records."""

    sources: list[SourceParams] = Field(description="The datasets of this run.")
    on_invalid: Literal["error", "skip"] = Field(
        "error",
        description="A malformed record stops the stage, naming its file and id ('error'), or "
        "is left out and listed in reports/rejects.json ('skip').",
    )
    duration_tolerance_s: float = Field(
        0.0, ge=0, description="Spans may end this many seconds past the stated video duration."
    )
    http_timeout_s: float = Field(60.0, gt=0, description="Socket timeout of http(s) downloads.")
    s3: S3Params = Field(default_factory=S3Params)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceParams]) -> list[SourceParams]:
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique, repeated: {', '.join(dupes)}")
        if not sources:
            raise ValueError("at least one source is needed")
        return sources


class ExtractFramesParams(_Section):
    """Stage `extract_frames`: Qwen2.5-VL frame sampling, done once, stored for training."""

    fps: float = Field(2.0, gt=0, description="Sampling rate in frames per second (Qwen2.5-VL: 2).")
    min_frames: int = Field(
        4, ge=2, description="At least this many frames per video (rounded up to even)."
    )
    max_frames: int = Field(
        768, ge=2, description="At most this many frames per video (rounded down to even)."
    )
    min_pixels: int = Field(
        16 * 28 * 28, gt=0, description="Per-frame pixel floor (paper: 16*28*28)."
    )
    max_pixels: int = Field(
        768 * 28 * 28, gt=0, description="Per-frame pixel cap (Qwen2.5-VL: 768*28*28)."
    )
    total_pixels: int = Field(
        3584 * 28 * 28,
        gt=0,
        description="Visual budget per video; per-frame cap = total/frames*2 (paper: 3584*28*28).",
    )
    patch_factor: int = Field(
        28, gt=0, description="Frame sides are multiples of this (patch 14 x merge 2)."
    )
    backend: Literal["pyav", "decord"] = Field(
        "pyav", description="Decoder: PyAV (default) or decord."
    )
    workers: int = Field(2, ge=1, description="Worker processes decoding videos in parallel.")
    timeout_s: float = Field(
        120.0, gt=0, description="A video taking longer than this is quarantined."
    )
    max_quarantine_fraction: float = Field(
        0.05, ge=0, le=1, description="Fail the stage when more than this share of videos is bad."
    )


class BuildDatasetParams(_Section):
    """Stage `build_dataset`: prompts and train/val split."""

    tasks: list[Literal["temporal_grounding", "tracking", "grounded_qa", "mcq"]] = Field(
        default_factory=lambda: ["temporal_grounding", "tracking", "grounded_qa", "mcq"],
        description="Tasks kept in the dataset.",
    )
    thinking: bool = Field(
        True, description="Ask for <think> reasoning (VideoChat-R1-thinking) or answers only."
    )
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of videos held out for validation."
    )
    seed: int = Field(
        0, description="Seed of the train/val split (split by video, never by query)."
    )
    max_samples_per_task: int | None = Field(
        None, ge=1, description="Cap per task and split (null: all)."
    )


class Params(_Section):
    """Everything in params.yaml."""

    preset: str | None = Field(None, description="Name of the preset last applied.")
    paths: PathsParams = Field(default_factory=PathsParams)
    download: DownloadParams
    extract_frames: ExtractFramesParams = Field(default_factory=ExtractFramesParams)
    build_dataset: BuildDatasetParams = Field(default_factory=BuildDatasetParams)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def to_plain(node: Any) -> Any:
    """ruamel's commented containers to plain dicts/lists (for pydantic and hashing)."""
    if isinstance(node, dict):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    return node


def _validate(raw: dict[str, Any], where: str) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


def load_raw(path: str | Path = PARAMS_FILE) -> Any:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found (run videorft from the project root)")
    try:
        return _yaml().load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # ruamel raises many error types for bad YAML
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml, and check that every preset would be valid too."""
    raw = to_plain(load_raw(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    params = _validate(raw, str(path))
    for name, overlay in params.presets.items():
        _validate(deep_merge(raw, overlay), f"{path}: preset {name!r}")
    return params


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Return base with overlay's values written in (mappings merged, everything else replaced)."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_in(doc: Any, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = doc
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list) and key.isdigit():
            node = node[int(key)]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            raise ConfigError(f"unknown parameter {'.'.join(keys[: i + 1])!r} in {dotted!r}")
    last = keys[-1]
    if isinstance(node, list) and last.isdigit():
        node[int(last)] = value
    elif isinstance(node, dict) and last in node:
        node[last] = value
    else:
        raise ConfigError(f"unknown parameter {dotted!r}")


def _merge_into(doc: Any, overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            _merge_into(doc[key], value)
        else:
            doc[key] = copy.deepcopy(value)


def parse_override(text: str) -> tuple[str, Any]:
    """`key.sub=value` with the value parsed as YAML (so 1 is an int, [a, b] a list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, value = text.split("=", 1)
    return key.strip(), YAML(typ="safe").load(value) if value.strip() else None


def update_params(
    path: str | Path = PARAMS_FILE, *, preset: str | None = None, overrides: list[str] = ()
) -> Params:
    """Apply a preset and/or `key=value` overrides to params.yaml in place (comments kept).

    Nothing is written unless the result validates; an unchanged file is not rewritten, so DVC
    and file watchers see no change.
    """
    path = Path(path)
    doc = load_raw(path)
    if preset is not None:
        presets = doc.get("presets") or {}
        if preset not in presets:
            raise ConfigError(
                f"{path}: unknown preset {preset!r} (available: {', '.join(presets) or 'none'})"
            )
        _merge_into(doc, to_plain(presets[preset]))
        doc["preset"] = preset
    for text in overrides:
        key, value = parse_override(text)
        _set_in(doc, key, value)
    _validate(to_plain(doc), str(path))
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    if buffer.getvalue() != path.read_text(encoding="utf-8"):
        atomic_write_text(path, buffer.getvalue())
    return load_params(path)


def describe(model: type[BaseModel] = Params, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) of every documented field, for `videorft params`."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe(annotation, dotted + "."))
            continue
        default = (
            "required"
            if field.is_required()
            else repr(field.get_default(call_default_factory=True))
        )
        rows.append((dotted, default, field.description or ""))
    return rows
