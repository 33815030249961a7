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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from typing import Any

from videorft.errors import DataValidationError
from videorft.io import check_relative_path

TASKS = ("temporal_grounding", "tracking", "grounded_qa", "mcq")
SPLITS = ("train", "val", "test")
TRACKING_BOXES = 8
OPTION_LETTERS = "ABCDEFG"
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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    """Raises DataValidationError with the file and record id already filled in."""

    def __init__(self, record: dict[str, Any], file: str | None):
        self.record = record
        self.file = file
        self.rid = str(record.get("id")) if record.get("id") is not None else None

    def fail(self, problem: str) -> None:
        raise DataValidationError(problem, file=self.file, record=self.rid)

    def require(self, condition: bool, problem: str) -> None:
        if not condition:
            self.fail(problem)

    def span(self, value: Any, what: str, duration: float | None, tolerance: float) -> None:
        self.require(
            isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value)),
            f"{what} must be [start, end] in seconds, got {value!r}",
        )
        start, end = value
        self.require(start >= 0, f"{what} starts before 0 s: {value!r}")
        self.require(end > start, f"{what} ends before it starts (end {end} <= start {start})")
        if duration is not None:
            self.require(
                end <= duration + tolerance,
                f"{what} {value!r} goes beyond the video duration {duration} s",
            )

    def box(self, value: Any, what: str) -> None:
        self.require(
            isinstance(value, list | tuple) and len(value) == 4 and all(map(_is_number, value)),
            f"{what} must be [x0, y0, x1, y1], got {value!r}",
        )
        x0, y0, x1, y1 = value
        self.require(
            all(0.0 <= v <= 1.0 for v in value),
            f"{what} {value!r} lies outside the frame (coordinates must be normalised to [0, 1])",
        )
        self.require(x1 > x0 and y1 > y0, f"{what} {value!r} is empty (need x1 > x0, y1 > y0)")

    def options(self, inputs: dict[str, Any]) -> int:
        options = inputs.get("options")
        self.require(
            isinstance(options, list)
            and 2 <= len(options) <= len(OPTION_LETTERS)
            and all(isinstance(o, str) and o.strip() for o in options),
            f"inputs.options must be 2 to {len(OPTION_LETTERS)} non-empty strings, got {options!r}",
        )
        self.require(
            isinstance(inputs.get("question"), str) and inputs["question"].strip(),
            "inputs.question is missing or empty",
        )
        return len(options)

    def answer(self, solution: dict[str, Any], n_options: int) -> None:
        answer = solution.get("answer")
        valid = OPTION_LETTERS[:n_options]
        self.require(
            isinstance(answer, str) and len(answer) == 1 and answer in valid,
            f"solution.answer must be one of {', '.join(valid)}, got {answer!r}",
        )


def validate_record(
    record: Any, *, file: str | None = None, duration_tolerance: float = 0.0
) -> dict[str, Any]:
    """Check one record; return it unchanged or raise DataValidationError naming file and id."""
    if not isinstance(record, dict):
        raise DataValidationError(
            f"a record must be an object, got {type(record).__name__}", file=file
        )
    check = _Checker(record, file)
    missing = [f for f in REQUIRED_FIELDS if record.get(f) is None]
    check.require(not missing, f"missing required field(s): {', '.join(missing)}")
    check.require(isinstance(record["id"], str) and record["id"].strip() != "", "empty id")
    task = record["task"]
    check.require(task in TASKS, f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
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
            isinstance(times, list) and len(times) == len(frames) and all(map(_is_number, times)),
            "frame_times must give one time in seconds per listed frame",
        )
        check.require(all(b > a for a, b in itertools.pairwise(times)), "frame_times must increase")

    duration = record.get("duration")
    check.require(
        duration is None or (_is_number(duration) and duration > 0),
        f"duration must be a positive number of seconds, got {duration!r}",
    )
    nframes = record.get("nframes")
    check.require(
        nframes is None or (isinstance(nframes, int) and nframes >= 2 and nframes % 2 == 0),
        f"nframes must be an even integer >= 2, got {nframes!r}",
    )

    inputs, solution = record["inputs"], record["solution"]
    check.require(isinstance(inputs, dict), "inputs must be an object")
    if task == "temporal_grounding":
        check.require(
            isinstance(inputs.get("query"), str) and inputs["query"].strip(),
            "inputs.query is missing or empty",
        )
        check.span(solution, "solution", duration, duration_tolerance)
    elif task == "tracking":
        check.require(
            isinstance(inputs.get("object"), str) and inputs["object"].strip(),
            "inputs.object is missing or empty",
        )
        check.require(
            isinstance(solution, list) and len(solution) == TRACKING_BOXES,
            f"tracking solution must hold exactly {TRACKING_BOXES} boxes, got "
            f"{len(solution) if isinstance(solution, list) else type(solution).__name__}",
        )
        for i, box in enumerate(solution):
            check.box(box, f"solution box {i}")
        if frames is not None:
            check.require(
                len(frames) == TRACKING_BOXES,
                f"tracking needs {TRACKING_BOXES} frames, one per box; got {len(frames)}",
            )
        else:
            check.require(
                nframes == TRACKING_BOXES, f"tracking on a video must set nframes={TRACKING_BOXES}"
            )
    else:
        n_options = check.options(inputs)
        check.require(isinstance(solution, dict), "solution must be an object with 'answer'")
        check.answer(solution, n_options)
        if task == "grounded_qa":
            glue = solution.get("glue")
            check.require(isinstance(glue, list) and glue, "solution.glue must list [s, e] spans")
            for i, span in enumerate(glue):
                check.span(span, f"solution.glue[{i}]", duration, duration_tolerance)
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
