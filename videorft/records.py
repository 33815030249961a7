"""The canonical sample record: the one shape every dataset source converts into.

A record is a plain dict written as one JSON line (``data/records.jsonl``). Fields:

==============  ==========================================================================
``id``          unique string, ``"<source>/<native id>"``
``task``        ``temporal_grounding`` | ``tracking`` | ``grounded_qa`` | ``mcq``
``source``      the source's name in params.yaml
``split``       ``train`` | ``val`` | ``test``, or ``null`` to let build_dataset assign one
``video``       path of a video file, relative to the data root (or ``null``)
``frames``      list of frame image paths relative to the data root (or ``null``); exactly
                one of ``video`` / ``frames`` is set
``frame_times`` seconds of each listed frame (required with ``frames``)
``nframes``     force this many sampled frames (tracking on a video: 8), else ``null``
``duration``    video length in seconds, or ``null`` when the annotation does not say
                (frame extraction measures it)
``inputs``      task inputs: temporal_grounding ``{"query"}``; tracking ``{"object"}``;
                grounded_qa and mcq ``{"question", "options": [text, ...]}``
``solution``    temporal_grounding ``[start, end]`` seconds; tracking eight normalised
                ``[x0, y0, x1, y1]`` boxes at the sampled frames; grounded_qa
                ``{"answer": "C", "glue": [[s, e], ...]}``; mcq ``{"answer": "B"}``
``meta``        free-form provenance (native ids, question type, ...)
==============  ==========================================================================

This module checks the fields every record shares; each task's ``inputs`` and ``solution`` are
checked by its module in :mod:`videorft.video_tasks`, looked up in the task registry.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import videorft.video_tasks as video_tasks
from videorft.errors import DataValidationError
from videorft.io import check_relative_path
from videorft.video_tasks.base import RecordChecker
from videorft.video_tasks.common import OPTION_LETTERS, is_number
from videorft.video_tasks.tracking import BOXES as TRACKING_BOXES

__all__ = [
    "OPTION_LETTERS",
    "REQUIRED_FIELDS",
    "SPLITS",
    "TASKS",
    "TRACKING_BOXES",
    "make_record",
    "validate_record",
    "validate_records",
]

#: The built-in tasks in canonical order (:data:`videorft.video_tasks.CANONICAL`). Validation
#: accepts every task in the registry, which a test or an experiment may extend.
TASKS = video_tasks.CANONICAL
SPLITS = ("train", "val", "test")
REQUIRED_FIELDS = ("id", "task", "source", "inputs", "solution")


def make_record(
    *,
    id: str,
    task: str,
    source: str,
    inputs: dict[str, Any],
    solution: Any,
    video: str | None = None,
    frames: list[str] | None = None,
    frame_times: list[float] | None = None,
    nframes: int | None = None,
    duration: float | None = None,
    split: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a record with every field present (absent ones as ``None``)."""
    return {
        "id": id,
        "task": task,
        "source": source,
        "split": split,
        "video": video,
        "frames": frames,
        "frame_times": frame_times,
        "nframes": nframes,
        "duration": duration,
        "inputs": inputs,
        "solution": solution,
        "meta": meta or {},
    }


def validate_record(
    record: Any, *, file: str | None = None, duration_tolerance: float = 0.0
) -> dict[str, Any]:
    """Check one record; return it unchanged or raise DataValidationError naming file and id."""
    if not isinstance(record, dict):
        raise DataValidationError(
            f"a record must be an object, got {type(record).__name__}", file=file
        )
    check = RecordChecker(record, file, duration_tolerance=duration_tolerance)
    missing = [f for f in REQUIRED_FIELDS if record.get(f) is None]
    check.require(not missing, f"missing required field(s): {', '.join(missing)}")
    check.require(isinstance(record["id"], str) and record["id"].strip() != "", "empty id")
    try:
        task = video_tasks.get(record["task"])
    except video_tasks.UnknownTaskError as exc:
        check.fail(str(exc))
    split = record.get("split")
    check.require(split is None or split in SPLITS, f"unknown split {split!r}")

    video, frames = record.get("video"), record.get("frames")
    check.require(
        (video is None) != (frames is None), "exactly one of 'video' and 'frames' must be set"
    )
    if video is not None:
        check_relative_path(video, file=file, record=check.rid)
    else:
        check.require(
            isinstance(frames, list) and len(frames) >= 2, "frames must list at least 2 image paths"
        )
        for frame in frames:
            check_relative_path(frame, file=file, record=check.rid)
        times = record.get("frame_times")
        check.require(
            isinstance(times, list) and len(times) == len(frames) and all(map(is_number, times)),
            "frame_times must give one time in seconds per listed frame",
        )
        check.require(all(b > a for a, b in itertools.pairwise(times)), "frame_times must increase")

    duration = record.get("duration")
    check.require(
        duration is None or (is_number(duration) and duration > 0),
        f"duration must be a positive number of seconds, got {duration!r}",
    )
    nframes = record.get("nframes")
    check.require(
        nframes is None or (isinstance(nframes, int) and nframes >= 2 and nframes % 2 == 0),
        f"nframes must be an even integer >= 2, got {nframes!r}",
    )

    check.require(isinstance(record["inputs"], dict), "inputs must be an object")
    task.validate(record, check)
    return record


def validate_records(
    records: Iterable[dict[str, Any]], *, file: str | None = None, duration_tolerance: float = 0.0
) -> Iterator[dict[str, Any]]:
    """Validate a stream of records and refuse duplicate ids."""
    seen: set[str] = set()
    for record in records:
        validate_record(record, file=file, duration_tolerance=duration_tolerance)
        if record["id"] in seen:
            raise DataValidationError("duplicate id", file=file, record=record["id"])
        seen.add(record["id"])
        yield record
