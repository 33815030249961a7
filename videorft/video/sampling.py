"""Qwen2.5-VL's video sampling rules (qwen_vl_utils 0.0.14), as pure functions.

The model is trained and evaluated on frames chosen by ``qwen_vl_utils.fetch_video``; the
frame store must hold exactly those frames at exactly that size, or token counts and temporal
positions drift from the paper's. This module reproduces, number for number:

- ``smart_nframes``: how many frames (``fps`` per second, clamped to [min, max], even);
- ``torch.linspace(0, total - 1, n).round()``: which frames, including float32 rounding
  (:func:`sample_indices` emulates PyTorch's CPU kernel bit for bit, without importing torch);
- the per-frame pixel budget ``max(min(max_pixels, total_pixels / n * 2), min_pixels * 1.05)``;
- ``smart_resize``: sides that are multiples of 28 (patch 14 x merge 2) within that budget.

Everything here is pure (no I/O), so it is cheap to test against the reference exhaustively.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from videorft.params import ExtractFramesParams

FRAME_FACTOR = 2  # frames are grouped in pairs (temporal patch 2), so counts are even
MAX_RATIO = 200  # qwen_vl_utils refuses frames more elongated than this
# fetch_image's default cap; frame *sequences* pass through it before the video budget.
IMAGE_MAX_TOKEN_NUM = 16384


class SamplingError(ValueError):
    """The video cannot be sampled as asked (no frames, too few frames, absurd aspect ratio)."""


@dataclass(frozen=True)
class SamplingConfig:
    """The knobs of Qwen2.5-VL's sampler; defaults are qwen_vl_utils' (the paper's: see params)."""

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    min_pixels: int = 16 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    total_pixels: int = 3584 * 28 * 28
    factor: int = 28

    def __post_init__(self) -> None:
        # Normalise types so equal configs hash (and key the frame store) identically.
        for name in ("min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels",
                     "factor"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "fps", float(self.fps))
        problems = [
            f"{name} must be > 0, got {value}"
            for name, value in asdict(self).items()
            if not (isinstance(value, int | float) and value > 0)
        ]
        if problems:
            raise SamplingError("invalid sampling config: " + "; ".join(problems))

    @classmethod
    def from_params(cls, p: ExtractFramesParams) -> SamplingConfig:
        """The sampler settings of params.yaml's ``extract_frames`` section."""
        return cls(
            fps=float(p.fps),
            min_frames=int(p.min_frames),
            max_frames=int(p.max_frames),
            min_pixels=int(p.min_pixels),
            max_pixels=int(p.max_pixels),
            total_pixels=int(p.total_pixels),
            factor=int(p.patch_factor),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SamplingPlan:
    """Which frames to take from a video and the size to resize them to."""

    indices: list[int]
    timestamps: list[float]  # seconds: index / video_fps (or the listed frame_times)
    sample_fps: float  # what the processor is told: nframes / total_frames * video_fps
    height: int
    width: int

    @property
    def nframes(self) -> int:
        return len(self.indices)


def round_by_factor(number: float, factor: int) -> int:
    """Closest multiple of factor (Python's round: ties go to even, as in qwen_vl_utils)."""
    return round(number / factor) * factor


def ceil_by_factor(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def floor_by_factor(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_nframes(
    total_frames: int, video_fps: float, cfg: SamplingConfig, nframes: int | None = None
) -> int:
    """Number of frames the model sees: ``fps`` per second within [min, max], even.

    ``nframes`` (a record's override, e.g. 8 for tracking) wins over fps and is rounded to
    even. Raises SamplingError when the video has fewer frames than that.
    """
    if total_frames < 1:
        raise SamplingError(f"video has {total_frames} frames; need at least {FRAME_FACTOR}")
    if nframes is not None:
        n = round_by_factor(nframes, FRAME_FACTOR)
    else:
        if not video_fps > 0:
            raise SamplingError(f"video frame rate must be > 0, got {video_fps}")
        min_frames = ceil_by_factor(cfg.min_frames, FRAME_FACTOR)
        max_frames = floor_by_factor(cfg.max_frames, FRAME_FACTOR)
        wanted = total_frames / video_fps * cfg.fps
        n = floor_by_factor(min(min(max(wanted, min_frames), max_frames), total_frames),
                            FRAME_FACTOR)
    if not FRAME_FACTOR <= n <= total_frames:
        asked = f"nframes={nframes}" if nframes is not None else f"fps={cfg.fps}"
        raise SamplingError(
            f"cannot sample {n} frames ({asked}) from a video of {total_frames} frames; "
            f"need {FRAME_FACTOR} <= frames <= {total_frames}"
        )
    return n


def sample_indices(total_frames: int, nframes: int) -> list[int]:
    """``torch.linspace(0, total_frames - 1, nframes).round().long()``, bit for bit.

    PyTorch computes linspace in float32: ``step = end / (n - 1)``; the first half is
    ``start + step * i`` and the second half ``end - step * (n - 1 - i)``, each a fused
    multiply-add (one rounding). For long videos the float32 error moves values across .5
    and changes which frame is picked, so plain float64 ``np.linspace`` would disagree with
    Qwen's loader on about a third of hour-long videos. The products and sums below are exact
    in float64 and then rounded once to float32, which is what the fused kernel does.
    """
    if nframes < 1:
        raise SamplingError(f"nframes must be >= 1, got {nframes}")
    if total_frames < 1:
        raise SamplingError(f"video has {total_frames} frames")
    if nframes == 1:
        return [0]
    end = np.float32(total_frames - 1)
    step = np.float64(np.float32(end / np.float32(nframes - 1)))
    i = np.arange(nframes, dtype=np.float64)
    first = (step * i).astype(np.float32)
    second = (np.float64(end) - step * (nframes - 1 - i)).astype(np.float32)
    values = np.where(np.arange(nframes) < nframes // 2, first, second)
    return [int(v) for v in np.rint(values)]


def frame_pixel_budget(nframes: int, cfg: SamplingConfig) -> float:
    """Per-frame pixel cap: the video budget shared by the frames, as fetch_video computes it.

    Kept as the exact float fetch_video uses (``total / n * 2`` is fractional), because
    smart_resize's scale factor depends on it; an int would very rarely change a side by 28.
    ``cfg.max_pixels`` plays the role of qwen_vl_utils' ``VIDEO_MAX_TOKEN_NUM * 28 * 28``
    (they are equal by default).
    """
    if nframes < 1:
        raise SamplingError(f"nframes must be >= 1, got {nframes}")
    return max(
        min(cfg.max_pixels, cfg.total_pixels / nframes * FRAME_FACTOR),
        int(cfg.min_pixels * 1.05),
    )


def smart_resize(
    height: int, width: int, factor: int, min_pixels: float, max_pixels: float
) -> tuple[int, int]:
    """(height, width) rounded to multiples of ``factor`` with pixels in [min, max], ratio kept."""
    if height <= 0 or width <= 0:
        raise SamplingError(f"frame size must be positive, got {height}x{width} (h x w)")
    if max_pixels < min_pixels:
        raise SamplingError(f"max_pixels {max_pixels} is below min_pixels {min_pixels}")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise SamplingError(
            f"aspect ratio {ratio:.1f} of a {height}x{width} (h x w) frame exceeds {MAX_RATIO}"
        )
    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = floor_by_factor(height / beta, factor)
        w_bar = floor_by_factor(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = ceil_by_factor(height * beta, factor)
        w_bar = ceil_by_factor(width * beta, factor)
    return h_bar, w_bar


def plan_sampling(
    total_frames: int,
    video_fps: float,
    height: int,
    width: int,
    cfg: SamplingConfig,
    nframes: int | None = None,
) -> SamplingPlan:
    """Frames and size Qwen2.5-VL's loader would use for a video of this shape."""
    n = smart_nframes(total_frames, video_fps, cfg, nframes)
    indices = sample_indices(total_frames, n)
    budget = frame_pixel_budget(n, cfg)
    h, w = smart_resize(height, width, cfg.factor, cfg.min_pixels, budget)
    return SamplingPlan(
        indices=indices,
        timestamps=[i / video_fps for i in indices],
        sample_fps=n / max(total_frames, 1e-6) * video_fps,
        height=h,
        width=w,
    )


def plan_sequence(
    frame_times: Sequence[float], height: int, width: int, cfg: SamplingConfig
) -> SamplingPlan:
    """Plan for a listed frame sequence (GOT-10k folders): every frame, padded to even.

    qwen_vl_utils takes every listed image, repeats the last one up to an even count, and
    resizes twice: first as an image, then to the video budget. In 0.0.14 the image step
    receives the *merged* factor (28) as its patch size, so it rounds to multiples of 56 with a
    16384*56*56 cap; we compute the final size the same two-step way so token counts match,
    but resize the pixels once, from the original, to that size. Padded frames repeat the
    last timestamp. ``sample_fps`` is the mean rate of the listed times.
    """
    count = len(frame_times)
    if count < 1:
        raise SamplingError("frame sequence is empty")
    times = [float(t) for t in frame_times]
    if any(b <= a for a, b in itertools.pairwise(times)):
        raise SamplingError(f"frame_times must increase, got {times[:8]}...")
    n = ceil_by_factor(count, FRAME_FACTOR)
    indices = list(range(count)) + [count - 1] * (n - count)
    timestamps = times + [times[-1]] * (n - count)
    span = times[-1] - times[0]
    sample_fps = (count - 1) / span if count > 1 else cfg.fps
    image_factor = 2 * cfg.factor
    image_h, image_w = smart_resize(
        height, width, image_factor, cfg.min_pixels, IMAGE_MAX_TOKEN_NUM * image_factor**2
    )
    h, w = smart_resize(image_h, image_w, cfg.factor, cfg.min_pixels, frame_pixel_budget(n, cfg))
    return SamplingPlan(
        indices=indices, timestamps=timestamps, sample_fps=sample_fps, height=h, width=w
    )
