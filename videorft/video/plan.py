"""What the frame store holds: one item per distinct video (or frame sequence) and sampling.

An item's key names its ``items/<key>.npy`` and ``.json`` in the store, and is what dataset
rows carry (``frames_key``) to find their frames. Keys depend only on the record's source and
the sampling config, never on time or order, so the same inputs always ask for the same items
and build_dataset can compute a record's key without running (or importing) the extraction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from videorft.errors import DataValidationError
from videorft.io import dumps_canonical, read_json
from videorft.video.sampling import SamplingConfig, SamplingError

#: extract_frames' report under ``paths.reports``: counts, and the sampling the frames were
#: taken with (what build_dataset reads to find them).
FRAMES_REPORT = "frames.json"
IMAGES_BACKEND = "images"  # frame sequences are read with PIL whatever the video backend
_STEM_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ExtractionItem:
    """One video (or frame sequence) to sample, shared by every record that uses it."""

    key: str
    video: str | None
    frames: tuple[str, ...] | None
    frame_times: tuple[float, ...] | None
    nframes: int | None
    record_ids: tuple[str, ...]

    @property
    def source(self) -> str:
        """How to name the item in messages: its video, or its frame folder."""
        if self.video is not None:
            return self.video
        assert self.frames
        return f"{PurePosixPath(self.frames[0]).parent}/ ({len(self.frames)} frames)"


def backend_for(item: ExtractionItem, backend: str) -> str:
    """The reader that samples ``item``: ``backend`` for a video, PIL for a frame sequence
    (recorded in the item's meta, so a changed video backend redoes videos only)."""
    return backend if item.video is not None else IMAGES_BACKEND


def _stem(record: dict[str, Any]) -> str:
    if record.get("video") is not None:
        name = PurePosixPath(str(record["video"])).stem
    else:
        name = PurePosixPath(str(record["frames"][0])).parent.name
    return _STEM_UNSAFE.sub("_", name).strip("._-")[:48] or "item"


def _key_payload(record: dict[str, Any], cfg: SamplingConfig) -> dict[str, Any]:
    frames = record.get("frames")
    times = record.get("frame_times") if frames is not None else None
    return {
        "video": record.get("video"),
        "frames": list(frames) if frames is not None else None,
        "frame_times": [float(t) for t in times] if times is not None else None,
        "nframes": record.get("nframes"),
        "sampling": cfg.as_dict(),
    }


def frame_key(record: dict[str, Any], cfg: SamplingConfig) -> str:
    """``<readable stem>-<12 hex>``: the same video and sampling always give the same key."""
    if (record.get("video") is None) == (record.get("frames") is None):
        raise DataValidationError(
            "exactly one of 'video' and 'frames' must be set", record=str(record.get("id"))
        )
    if record.get("frames") is not None and not record["frames"]:
        raise DataValidationError("frames is empty", record=str(record.get("id")))
    digest = hashlib.sha1(dumps_canonical(_key_payload(record, cfg)).encode("utf-8"))
    return f"{_stem(record)}-{digest.hexdigest()[:12]}"


def items_from_records(
    records: Iterable[dict[str, Any]], cfg: SamplingConfig
) -> list[ExtractionItem]:
    """One item per distinct (video or sequence, sampling), listing its records; sorted by key."""
    firsts: dict[str, dict[str, Any]] = {}
    ids: dict[str, list[str]] = {}
    for record in records:
        key = frame_key(record, cfg)
        firsts.setdefault(key, record)
        ids.setdefault(key, []).append(str(record.get("id")))
    items = []
    for key in sorted(firsts):
        record = firsts[key]
        frames = record.get("frames")
        times = record.get("frame_times") if frames is not None else None
        if frames is not None and (times is None or len(times) != len(frames)):
            raise DataValidationError(
                "frame_times must give one time per listed frame", record=str(record.get("id"))
            )
        items.append(
            ExtractionItem(
                key=key,
                video=record.get("video"),
                frames=tuple(frames) if frames is not None else None,
                frame_times=tuple(float(t) for t in times) if times is not None else None,
                nframes=record.get("nframes"),
                record_ids=tuple(sorted(ids[key])),
            )
        )
    return items


def recorded_sampling(report: Path) -> SamplingConfig:
    """The sampling extract_frames last ran with, from its report. build_dataset joins records
    to frames by it rather than by params, so extract_frames' knobs are listed once in
    dvc.yaml and reach build_dataset through this file (the store keeps every sampling it
    ever held, so going back to an earlier one changes only this report)."""
    recorded = read_json(report)
    sampling = recorded.get("sampling") if isinstance(recorded, dict) else None
    if not isinstance(sampling, dict):
        raise DataValidationError("no `sampling` recorded; run extract_frames first",
                                  file=str(report))
    try:
        return SamplingConfig(**sampling)
    except (TypeError, SamplingError) as exc:
        raise DataValidationError(f"bad `sampling`: {exc}", file=str(report)) from None
