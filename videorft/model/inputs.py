"""Model inputs for a batch of dataset rows: chat-templated prompts plus frame-store videos.

The frames in the store were already sampled and sized by qwen_vl_utils' rules (see
:mod:`videorft.video.sampling`), so the processor must neither re-sample (``do_sample_frames``)
nor resize (``do_resize``) them: every stored frame becomes exactly (H/14) x (W/14) patches,
every two frames one temporal patch.

Time matters as much as pixels: Qwen2.5-VL's multimodal RoPE gives video tokens temporal
position ids ``floor(k * tokens_per_second * second_per_grid_ts)`` for temporal patch ``k``,
with ``second_per_grid_ts = temporal_patch_size / fps`` of the *sampled* frames. In
transformers 5.24 the processor computes that fps from each video's ``VideoMetadata``
(``sampled_fps = len(frames_indices) / total_num_frames * fps``) and, given no metadata,
assumes 24 fps, silently giving 2/24 s per temporal patch instead of 2/2. So we pass metadata
describing the stored frames themselves (``total_num_frames`` = T, ``frames_indices`` =
0..T-1, ``fps`` = the store's ``sample_fps``), which makes ``sampled_fps`` exactly the rate
qwen_vl_utils reports for those frames, and we check the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import BatchFeature

    from videorft.video.store import FrameStore


def row_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat for a dataset row, shaped like :func:`videorft.prompts.build_messages`."""
    return [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": row["prompt"]}],
        }
    ]


def check_frames(frames: np.ndarray, fps: float, factor: int, *, where: str) -> np.ndarray:
    """Pre-extracted frames, checked: uint8 [T, H, W, 3], sides multiples of `factor`, a real
    fps. The processor would fail obscurely (or silently resize) otherwise."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"{where}: expected uint8 video frames [T, H, W, 3], "
                         f"got {frames.dtype} {list(frames.shape)}")
    height, width = frames.shape[1:3]
    if height % factor or width % factor:
        raise ValueError(f"{where}: frames are {height}x{width}, not multiples of {factor} "
                         "(patch x merge); they must come pre-sized from extract_frames")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{where}: bad video fps {fps!r}")
    return np.ascontiguousarray(frames)


def process_videos(
    processor: Any,
    texts: Sequence[str],
    videos: Sequence[tuple[np.ndarray, float]],
    *,
    names: Sequence[str] | None = None,
) -> BatchFeature:
    """The processor over chat-templated `texts` and pre-extracted `(frames, fps)` videos.

    Frames are used as they are (no re-sampling, no resize) and described by metadata so that
    ``second_per_grid_ts`` = temporal_patch_size / fps (checked: see the module docstring).
    Prompts are left-padded. `names` label the videos in error messages.
    """
    video_processor = processor.video_processor
    temporal_patch = int(video_processor.temporal_patch_size)
    factor = int(video_processor.patch_size) * int(video_processor.merge_size)
    checked, metadata = [], []
    for index, (frames, fps) in enumerate(videos):
        where = names[index] if names is not None else f"video {index}"
        frames = check_frames(frames, float(fps), factor, where=where)
        count, height, width = frames.shape[:3]
        checked.append(frames)
        metadata.append({
            "total_num_frames": count,
            "fps": float(fps),
            "frames_indices": list(range(count)),
            "duration": count / float(fps),
            "height": height,
            "width": width,
        })
    video_kwargs: dict[str, Any] = {"do_sample_frames": False, "do_resize": False}
    if getattr(video_processor, "cap_pixels_per_frame", False) is None:
        # Irrelevant without resizing; set only to silence 5.24's per-call deprecation warning.
        video_kwargs["cap_pixels_per_frame"] = True
    inputs = processor(
        text=list(texts),
        videos=checked,
        video_metadata=metadata,
        padding=True,
        padding_side="left",
        return_tensors="pt",
        **video_kwargs,
    )
    if "second_per_grid_ts" in inputs:
        expected = [temporal_patch / float(fps) for _, fps in videos]
        got = [float(v) for v in inputs["second_per_grid_ts"]]
        if not all(math.isclose(g, e, rel_tol=1e-6) for g, e in zip(got, expected, strict=True)):
            raise RuntimeError(f"the processor computed second_per_grid_ts {got}, expected "
                               f"{expected} (temporal_patch_size / sample_fps): transformers "
                               "changed how it reads the video fps")
    return inputs


def _load_video(store: FrameStore, row: dict[str, Any]) -> tuple[np.ndarray, float]:
    """(frames, sample_fps) of a row from the frame store; refuses a stale dataset row."""
    key = row["frames_key"]
    fps = float(store.meta(key)["sample_fps"])
    if row.get("sample_fps") is not None and not math.isclose(row["sample_fps"], fps,
                                                              rel_tol=1e-9):
        raise ValueError(f"row {row.get('id')!r}: sample_fps {row['sample_fps']} differs from "
                         f"the frame store's {fps} for {key!r}; the dataset is stale "
                         "(re-run build_dataset)")
    # A writable copy: the store memory-maps read-only, which torch.from_numpy warns about.
    return np.array(store.load(key)), fps


def video_inputs(
    processor: Any,
    rows: Sequence[dict[str, Any]],
    store: FrameStore,
    *,
    add_generation_prompt: bool = True,
) -> BatchFeature:
    """Tensors for ``model(**inputs)`` / ``model.generate(**inputs)`` for ``rows``.

    Each row needs ``prompt`` and ``frames_key`` (as build_dataset writes them). Prompts are
    left-padded, so generated tokens start at the same column in every row. Returns
    ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` (pass it on: without it
    transformers 5.24 falls back to plain 1-D positions for the video tokens),
    ``pixel_values_videos``, ``video_grid_thw`` and, for Qwen2.5-VL processors,
    ``second_per_grid_ts`` = temporal_patch_size / sample_fps per row.
    """
    if not rows:
        raise ValueError("video_inputs needs at least one row")
    texts = [
        processor.apply_chat_template(
            row_messages(row), tokenize=False, add_generation_prompt=add_generation_prompt
        )
        for row in rows
    ]
    videos = [_load_video(store, row) for row in rows]
    names = [f"frame store item {row['frames_key']!r}" for row in rows]
    return process_videos(processor, texts, videos, names=names)
