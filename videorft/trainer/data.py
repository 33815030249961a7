"""Dataset rows (``build_dataset``'s JSONL) as trainer inputs, with videos from the frame store.

Rows stay small: each names its frames by ``frames_key``; the trainer asks
:func:`frame_store_loader` for ``(frames, fps)`` when it builds a batch, so nothing decodes a
video during training and the dataset never holds pixels.

:func:`reference_answer` writes the answer a perfect model would give, in the exact format the
rewards parse; the warm start trains on it, and the tests check that it scores 1.0 on every
reward component (one definition of the format per task, in its module under
:mod:`videorft.video_tasks`, next to the reward rules that parse it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import videorft.video_tasks as video_tasks
from videorft.errors import ConfigError, DataValidationError
from videorft.io import read_jsonl
from videorft.model.inputs import row_messages
from videorft.video.store import FrameStore

#: Columns the trainers need from a dataset row (the rest is left out of the HF dataset).
TRAIN_COLUMNS: tuple[str, ...] = ("id", "task", "solution", "thinking", "frames_key", "sample_fps")

VideoLoader = Callable[[dict[str, Any]], tuple[np.ndarray, float]]


def load_split(dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """The rows of ``split`` (``train``/``val``/``test``), checked to have what training needs."""
    path = Path(dataset_dir) / f"{split}.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run the build_dataset stage first)")
    rows = list(read_jsonl(path))
    for number, row in enumerate(rows, start=1):
        missing = [c for c in ("prompt", *TRAIN_COLUMNS) if c not in row]
        if missing:
            raise DataValidationError(f"line {number}: row lacks {', '.join(missing)}",
                                      file=str(path))
    return rows


def select_sources(rows: list[dict[str, Any]], sources: list[str] | None, *,
                   key: str, file: str) -> list[dict[str, Any]]:
    """The rows whose ``source`` is in ``sources`` (all rows when ``None``).

    A stage that trains on some sources only (warm start on a pretraining source, GRPO on the
    target) names them in params; a name that matches no row is a typo or a stale setting,
    reported with the sources the split does have.
    """
    if sources is None:
        return rows
    present = sorted({str(row.get("source")) for row in rows})
    unknown = [name for name in sources if name not in present]
    if unknown:
        raise ConfigError(f"params.yaml: {key}: {', '.join(map(repr, unknown))} has no rows "
                          f"in {file} (its sources: {', '.join(present) or 'none'})")
    return [row for row in rows if row.get("source") in sources]


def to_trainer_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as TRL wants them: a conversational ``prompt`` plus the reward/loader columns.

    ``solution`` is JSON-encoded: its shape differs per task (a span, 8 boxes, a dict), which a
    single Arrow column cannot hold; the rewards decode it.
    """
    return [
        {
            "prompt": row_messages(row),
            "id": row["id"],
            "task": row["task"],
            "solution": json.dumps(row["solution"]),
            "thinking": bool(row["thinking"]),
            "frames_key": row["frames_key"],
            "sample_fps": float(row["sample_fps"]),
        }
        for row in rows
    ]


def to_hf_dataset(rows: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` of :func:`to_trainer_rows`."""
    from datasets import Dataset

    return Dataset.from_list(to_trainer_rows(rows))


def frame_store_loader(store: FrameStore) -> VideoLoader:
    """``row -> (uint8 [T, H, W, 3], sample_fps)`` from the frame store; refuses stale rows."""

    def load(row: dict[str, Any]) -> tuple[np.ndarray, float]:
        key = row["frames_key"]
        if key not in store:
            raise DataValidationError(
                f"{store.store_dir}: no frames for {key!r} (row {row.get('id')!r}); "
                "re-run extract_frames and build_dataset")
        fps = float(store.meta(key)["sample_fps"])
        expected = row.get("sample_fps")
        if expected is not None and not math.isclose(float(expected), fps, rel_tol=1e-9):
            raise DataValidationError(
                f"row {row.get('id')!r}: sample_fps {expected} differs from the frame store's "
                f"{fps} for {key!r}; the dataset is stale (re-run build_dataset)")
        return np.array(store.load(key)), fps

    return load


def reference_answer(task: str, solution: Any, *, thinking: bool) -> str:
    """The ideal completion for a sample: the reward's format, filled with the ground truth
    (each task writes its own, :meth:`videorft.video_tasks.base.VideoTask.reference_answer`)."""
    try:
        spec = video_tasks.get(task)
    except video_tasks.UnknownTaskError:
        raise ValueError(f"unknown task {task!r}") from None
    return spec.reference_answer(solution, thinking=thinking)
