"""The ``synthetic`` source: the project's embedded default dataset, rendered instead of fetched.

Why it exists: the pipeline (download -> frames -> dataset -> GRPO) must run end to end with no
network and no licensed data, and its rewards must be checkable. So this module renders small
H.264 videos of coloured shapes (circle, square, triangle, diamond) on a plain or gently
textured background, and because it draws every pixel it knows the exact ground truth:

* ``temporal_grounding`` - "the red circle appears": the target is visible over one span
  strictly inside the video (by default at least 1 s, with 0.5 s before and after),
  distractor shapes are on screen throughout;
  solution ``[start, end]`` seconds = first visible frame / fps, (last visible frame + 1) / fps.
* ``tracking`` - an object moves along a straight line or a quadratic Bezier curve that stays
  inside the frame; ``nframes`` = 8 and the solution is the drawn shape's tight pixel box,
  normalised, at the 8 frames Qwen2.5-VL samples (``round(linspace(0, total - 1, 8))``).
* ``grounded_qa`` - "Which shape appears for a while and then disappears?" / "What colour is
  the <shape> that ...?" with 4 options; ``glue`` is exactly the target's visible span.
* ``mcq`` - "In which direction does the green triangle move?" (left/right/up/down) or "How
  many shapes are in the video?" with 4 options.

Options make the scenes easier for small models without changing the task formats:
``time_bar`` draws a clock along the bottom of every frame (shapes stay above it),
``shape_scale`` enlarges the shapes, ``max_distractors`` caps the distractor shapes,
``tracking_paths`` moves a tracked object between two corners (``corners``, 12 tracks) or
from the centre to a corner (``centre``, 4 tracks, none favoured without the video; with
``mirror_tracks`` each four consecutive samples are one scene sent to the four corners),
``quadrant_tint`` gives each quarter of the stage its own hue (the clock's counterpart for
space), and
``span_grid_s``/``min_span_s``/``max_span_s``/``span_margin_s`` shape the appearances (e.g. 1 s
spans on whole seconds: four possible answers in a 4 s video, none favoured).

With ``held_out`` set, every record carries its split: per task the first indices are test,
the next val, the rest train (one video per sample, so the split is by video), and growing
``samples_per_task`` adds only train videos. Without it, build_dataset splits by video hash.

Frame ``i`` is shown at time ``i / fps``, so a shape drawn on frames ``a .. b-1`` is visible
over ``[a / fps, b / fps)``. Shapes are drawn in 2x2-pixel cells at even positions, straight
into the YUV planes, so yuv420p chroma subsampling cannot wash out their edges: what decodes is
what the boxes say. Every sample has its own video and its own random stream
(seeded from ``seed``, the task and the sample index), so changing one task's count leaves the
other tasks' samples unchanged. Answer letters are balanced over the options with a seeded
shuffle. The encoder runs single-threaded with fixed settings, so a seed gives byte-identical
files on the same PyAV / libx264 build.

``generate`` writes ``<folder>/videos/*.mp4``, ``<folder>/generator.json`` (a hash of the
options) and, last, ``<folder>/annotations.jsonl`` (records with ids and video paths relative to
``folder``); ``parse`` re-bases them onto the raw data root like every other source.
"""

from __future__ import annotations

import functools
import itertools
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import videorft.video_tasks as video_tasks
from videorft.errors import ConfigError, DataValidationError
from videorft.io import (
    atomic_write_json,
    check_relative_path,
    dumps_canonical,
    parse_json_line,
    read_json,
    sha256_bytes,
    temp_file_beside,
    write_jsonl,
)
from videorft.params import SourceParams
from videorft.records import OPTION_LETTERS, TRACKING_BOXES, make_record
from videorft.sources._common import Item, OnInvalid, emit, read_text, root_relative
from videorft.video.decode import available_cpus
from videorft.video.sampling import sample_indices

# Bump when the rendering or the record layout changes, so old folders are regenerated.
GENERATOR_VERSION = 2
ANNOTATIONS_FILE = "annotations.jsonl"
GENERATOR_FILE = "generator.json"
VIDEO_DIR = "videos"
DEFAULT_SAMPLES = 8
N_OPTIONS = 4
# Fewer videos than this per CPU are encoded in this process: a worker takes ~1 s to start.
MIN_VIDEOS_PER_WORKER = 128

Task = Literal["temporal_grounding", "tracking", "grounded_qa", "mcq"]
#: The tasks this source renders (one builder each, ``_BUILDERS``), in the task registry's
#: canonical order; a sample's random stream is seeded with its task's position here.
TASKS: tuple[str, ...] = video_tasks.CANONICAL
HeldOut = Literal["val", "test"]
GqaQuestion = Literal["shape", "colour"]
McqQuestion = Literal["direction", "count"]
TrackingPath = Literal["free", "corners", "centre"]
GQA_QUESTIONS: tuple[GqaQuestion, ...] = ("shape", "colour")
MCQ_QUESTIONS: tuple[McqQuestion, ...] = ("direction", "count")

# Saturated colours far apart in RGB (pairwise distance >= 140) and from the grey backgrounds,
# so they survive yuv420p compression and can be segmented by colour in tests.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 70, 230),
    "yellow": (235, 215, 30),
    "purple": (170, 50, 210),
    "cyan": (40, 205, 215),
}
#: The colour options of ``canonical_options``, in their fixed order (the first four colours).
CANONICAL_COLOURS = tuple(COLOURS)[:4]
SHAPES = ("circle", "square", "triangle", "diamond")
DIRECTIONS = ("left", "right", "up", "down")

_VIDEO_NAME = re.compile(r"^(" + "|".join(TASKS) + r")_\d{4,}\.mp4$")


class SyntheticOptions(BaseModel):
    """Generator settings (``download.sources[].options`` of a ``synthetic`` source)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, description="Seed of everything random: same seed, same files.")
    samples_per_task: dict[Task, int] = Field(
        default_factory=dict,
        validate_default=True,
        description=f"Samples (one video each) per task; tasks not listed get {DEFAULT_SAMPLES}.",
    )
    width: int = Field(160, ge=96, le=1920, description="Frame width in pixels (even).")
    height: int = Field(120, ge=96, le=1080, description="Frame height in pixels (even).")
    fps: int = Field(8, ge=4, le=60, description="Frames per second of the rendered videos.")
    min_duration_s: float = Field(
        4.0, ge=3.0, description="Shortest video (>= 3 s: margins plus a 1 s appearance)."
    )
    max_duration_s: float = Field(8.0, le=600.0, description="Longest video, in seconds.")
    crf: int = Field(23, ge=0, le=51, description="libx264 constant rate factor (quality).")
    gop: int | None = Field(
        None, ge=1, description="Keyframe interval in frames; null: 2 seconds' worth (2 x fps)."
    )
    tasks: list[Task] = Field(
        default_factory=lambda: list(TASKS), description="Tasks to generate samples for."
    )
    time_bar: bool = Field(
        False,
        description="Draw a clock along the bottom of every frame: a bar whose length is the "
        "elapsed share of the video; shapes stay above it. A tiny model learns to locate "
        "events in time with it, but not from the rotary time positions alone in a CPU budget "
        "(docs/research/rft-miniature.md). Real videos have no such bar.",
    )
    mirror_tracks: bool = Field(
        False, description="With `tracking_paths: centre`, tracking samples come in fours: "
        "indices 4k..4k+3 share one scene and their targets go to the drawn corner, its "
        "left-right mirror, its up-down mirror and both, in that order (`held_out` counts "
        "must be multiples of 4, so a scene stays in one split). Taken in order "
        "(`train.shuffle_dataset: false`), a GRPO batch then rewards no lean toward a side, "
        "only seeing where the target goes (docs/research/rft-miniature.md, r217-r226).",
    )
    quadrant_tint: float = Field(
        0.0, ge=0.0, le=80.0,
        description="Add this much (0-255 scale) red to the stage's left half, blue to its "
        "right half and green to its top half, so each quadrant has its own hue: the time "
        "bar's counterpart for space. Qwen2.5-VL's vision tower has no absolute position "
        "embedding and a tiny model's rotary height/width frequencies barely turn across a "
        "4x3 patch grid, so a patch's colour is what tells it where it is "
        "(docs/research/rft-miniature.md, r156-r163); 0: off. Real videos have no such tint.",
    )
    shape_scale: float = Field(
        1.0, ge=0.5, le=3.0, description="Multiplies every shape's side length (larger: easier "
        "to see at a small pixel budget)."
    )
    max_distractors: int | None = Field(
        None, ge=0, description="At most this many distractor shapes per scene; null: each "
        "task's own range (temporal grounding 1-3, tracking 0-2, grounded QA 1-2, "
        "direction questions 0-2)."
    )
    wordings: int | None = Field(
        None, ge=1, description="Temporal-grounding queries and grounded-QA questions use only "
        "the first N of the generator's wordings (1: one fixed phrasing, so a small model "
        "learns the scene, not the sentence); null: all."
    )
    gqa_questions: list[GqaQuestion] = Field(
        default_factory=lambda: list(GQA_QUESTIONS), min_length=1,
        description="Grounded-QA question types, taken in turn by sample index: `shape` "
        "(which shape appears and disappears) and `colour` (what colour that shape is).",
    )
    mcq_questions: list[McqQuestion] = Field(
        default_factory=lambda: list(MCQ_QUESTIONS), min_length=1,
        description="Multiple-choice question types, taken in turn by sample index: "
        "`direction` (where the shape moves) and `count` (how many shapes there are).",
    )
    canonical_options: bool = Field(
        False,
        description="List every question's options in one fixed order (the four shapes, the "
        "first four colours, the four directions, the counts 1-4) and pick the answer to match "
        "its balanced letter, so a letter always names the same answer: a small model then "
        "learns the scene instead of reading the options.",
    )
    tracking_paths: TrackingPath = Field(
        "free", description="How a tracked object moves: `free`, a line or a Bezier curve "
        "between random points, at a random size; `corners`, a straight line at constant speed "
        "from one corner of the frame to another (12 paths), at one size, so the eight boxes "
        "take one of 12 values and a small model learns where the object goes (as `span_grid_s` "
        "does for spans) instead of regressing coordinates; `centre`, the same from the centre "
        "of the frame to one of its four corners (4 paths from one start): by symmetry no "
        "answer given without the video scores more than another, so only seeing pays.",
    )
    span_grid_s: float | None = Field(
        None, gt=0, description="Appearances (temporal grounding, grounded QA) start and end on "
        "multiples of this many seconds; null: on any frame."
    )
    min_span_s: float = Field(1.0, gt=0, description="Shortest appearance, in seconds.")
    max_span_s: float | None = Field(
        None, gt=0, description="Longest appearance, in seconds; null: 60% of the video."
    )
    span_margin_s: float = Field(
        0.5, ge=0, description="Video before and after every appearance, at least, in seconds."
    )
    held_out: dict[HeldOut, int] = Field(
        default_factory=dict,
        description="Per task, samples given to the test and val splits (each sample has its "
        "own video, so the split is by video); the rest are train. Test takes the first "
        "indices, then val, so growing samples_per_task adds train videos and leaves test "
        "and val as they were. Empty: the records carry no split (build_dataset splits them).",
    )

    @field_validator("samples_per_task")
    @classmethod
    def _fill_counts(cls, counts: dict[str, int]) -> dict[str, int]:
        bad = {t: n for t, n in counts.items() if n < 0}
        if bad:
            raise ValueError(f"sample counts must be >= 0, got {bad}")
        return {t: counts.get(t, DEFAULT_SAMPLES) for t in TASKS}

    @field_validator("tasks")
    @classmethod
    def _canonical_tasks(cls, tasks: list[str]) -> list[str]:
        if not tasks:
            raise ValueError("at least one task is needed")
        return [t for t in TASKS if t in tasks]  # canonical order, duplicates dropped

    @model_validator(mode="after")
    def _check(self) -> SyntheticOptions:
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even for yuv420p, got "
                             f"{self.width}x{self.height}")
        if self.max_duration_s < self.min_duration_s:
            raise ValueError(f"max_duration_s ({self.max_duration_s}) < min_duration_s "
                             f"({self.min_duration_s})")
        if self.max_span_s is not None and self.max_span_s < self.min_span_s:
            raise ValueError(f"max_span_s ({self.max_span_s}) < min_span_s ({self.min_span_s})")
        if self.span_grid_s is not None and abs(round(self.span_grid_s * self.fps)
                                               - self.span_grid_s * self.fps) > 1e-9:
            raise ValueError(f"span_grid_s ({self.span_grid_s}) must be a whole number of "
                             f"frames at fps {self.fps}")
        if 2 * self.span_margin_s + self.min_span_s > self.min_duration_s:
            raise ValueError(f"an appearance of min_span_s ({self.min_span_s}) with "
                             f"span_margin_s ({self.span_margin_s}) on both sides does not fit "
                             f"in min_duration_s ({self.min_duration_s})")
        if not any(self.count(task) for task in self.tasks):
            raise ValueError("no samples to generate: every selected task has a count of 0")
        if self.mirror_tracks and self.tracking_paths != "centre":
            raise ValueError("mirror_tracks needs tracking_paths: centre (the four corners of "
                             f"one start), got {self.tracking_paths!r}")
        if self.mirror_tracks and any(n % 4 for n in self.held_out.values()):
            raise ValueError("mirror_tracks: held_out counts must be multiples of 4, or a "
                             f"scene's four videos would cross splits, got {self.held_out}")
        if any(n < 0 for n in self.held_out.values()):
            raise ValueError(f"held_out counts must be >= 0, got {self.held_out}")
        held = sum(self.held_out.values())
        short = {t: self.count(t) for t in self.tasks if 0 < self.count(t) < held}
        if short:
            raise ValueError(f"held_out takes {held} samples per task, more than {short} has")
        return self

    @property
    def keyint(self) -> int:
        return self.gop if self.gop is not None else 2 * self.fps

    def count(self, task: str) -> int:
        return self.samples_per_task[task] if task in self.tasks else 0

    def blocks(self, task: str) -> list[tuple[str | None, int]]:
        """The task's samples as consecutive (split, count) blocks: test, val, then train;
        one block without a split when nothing is held out."""
        count = self.count(task)
        if not self.held_out:
            return [(None, count)]
        test, val = self.held_out.get("test", 0), self.held_out.get("val", 0)
        return [("test", test), ("val", val), ("train", count - test - val)]


def load_options(config: SourceParams) -> SyntheticOptions:
    """Validate ``config.options``; a typo or bad value is a ConfigError naming the source."""
    try:
        return SyntheticOptions.model_validate(config.options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(options)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"params.yaml: download.sources[{config.name!r}].options: {problems}"
        ) from None


def options_hash(options: SyntheticOptions) -> str:
    """Fingerprint of everything that determines the output (options + generator version)."""
    payload = {"version": GENERATOR_VERSION, "options": options.model_dump(mode="json")}
    return sha256_bytes(dumps_canonical(payload).encode("utf-8"))


# --------------------------------------------------------------------------- drawing


def _even(value: Any) -> Any:
    """Round to the nearest even integer (element-wise): the 2x2 chroma grid of yuv420p."""
    return (2 * np.rint(np.asarray(value) / 2)).astype(int)


@functools.lru_cache(maxsize=256)
def _mask(kind: str, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Boolean ``size x size`` mask of a shape and its tight box (x0, y0, x1, y1), half-open.

    Shapes are drawn in 2x2 pixel cells at even positions, so every chroma sample of yuv420p
    is either all shape or all background: the decoded colours then cover exactly the drawn
    pixels (no one-pixel tips or edges washed out by subsampling), and the boxes stay true.
    """
    if size % 2:
        raise ValueError(f"shape size must be even, got {size}")
    cells = size // 2
    centres = np.arange(cells) + 0.5
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    h = cells / 2
    if kind == "circle":
        mask = (xx - h) ** 2 + (yy - h) ** 2 <= h * h
    elif kind == "square":
        mask = np.ones((cells, cells), dtype=bool)
    elif kind == "triangle":  # apex at the top centre, base along the bottom row
        mask = np.abs(xx - h) <= yy / 2
    elif kind == "diamond":
        mask = np.abs(xx - h) + np.abs(yy - h) <= h
    else:
        raise ValueError(f"unknown shape {kind!r}")
    mask = np.repeat(np.repeat(mask, 2, axis=0), 2, axis=1)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    mask.setflags(write=False)
    return mask, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


@dataclass
class _Sprite:
    """One shape: per-frame top-left position and visibility."""

    kind: str
    colour: str
    size: int
    xs: np.ndarray
    ys: np.ndarray
    visible: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.colour} {self.kind}"

    def box(self, frame: int, width: int, height: int) -> list[float]:
        """Normalised tight box of the pixels drawn on ``frame``."""
        _, (bx0, by0, bx1, by1) = _mask(self.kind, self.size)
        x, y = int(self.xs[frame]), int(self.ys[frame])
        return [(x + bx0) / width, (y + by0) / height, (x + bx1) / width, (y + by1) / height]

    def span(self, fps: int) -> tuple[int, int, float, float]:
        """First visible frame, one past the last, and the same in seconds."""
        frames = np.flatnonzero(self.visible)
        a, b = int(frames[0]), int(frames[-1]) + 1
        return a, b, a / fps, b / fps


@dataclass
class _Sample:
    native_id: str
    task: str
    n_frames: int
    background: np.ndarray
    sprites: list[_Sprite]  # drawn in order: the target last, so it is never occluded
    inputs: dict[str, Any]
    solution: Any
    meta: dict[str, Any] = field(default_factory=dict)
    split: str | None = None  # set from SyntheticOptions.held_out; None: build_dataset splits


# BT.601 limited range (what decoders assume for untagged SD video) : RGB -> Y, Cb, Cr.
_RGB_TO_YUV = np.array([[65.481, 128.553, 24.966],
                        [-37.797, -74.203, 112.0],
                        [112.0, -93.786, -18.214]]) / 255.0
_YUV_OFFSET = np.array([16.0, 128.0, 128.0])


def _yuv(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb @ _RGB_TO_YUV.T + _YUV_OFFSET), 0, 255).astype(np.uint8)


def _yuv_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full-size Y and 2x2-averaged Cb, Cr planes of an RGB image (even sides)."""
    h, w, _ = rgb.shape
    y = _yuv(rgb.astype(np.float64))[..., 0]
    pooled = rgb.astype(np.float64).reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    chroma = _yuv(pooled)
    return y, chroma[..., 1].copy(), chroma[..., 2].copy()


def _bar_height(height: int) -> int:
    """Rows of the clock bar: a sixth of the frame, even (so it sits on the chroma grid)."""
    return 2 * (height // 12)


def _draw_clock(y: np.ndarray, u: np.ndarray, v: np.ndarray, frame: int, n_frames: int) -> None:
    """The clock bar on one frame's planes: white for the elapsed share, black after it."""
    h, w = y.shape
    bar, length = _bar_height(h), 2 * round((frame + 1) / n_frames * w / 2)
    y[h - bar :, :length], y[h - bar :, length:] = 235, 16
    u[(h - bar) // 2 :], v[(h - bar) // 2 :] = 128, 128


def _render(sample: _Sample, time_bar: bool = False) -> Iterator[np.ndarray]:
    """Frames of a sample as packed yuv420p arrays (``(h * 3 / 2, w)``, PyAV's layout).

    Painting the planes directly skips an RGB -> YUV conversion per frame (the bulk of the
    run time otherwise); shapes sit on the 2x2 chroma grid, so their chroma is exact.
    ``time_bar`` adds the clock (``SyntheticOptions.time_bar``).
    """
    y0, u0, v0 = _yuv_planes(sample.background)
    h, w = y0.shape
    colours = {name: _yuv(np.array(rgb, dtype=np.float64)) for name, rgb in COLOURS.items()}
    for i in range(sample.n_frames):
        y, u, v = y0.copy(), u0.copy(), v0.copy()
        for sprite in sample.sprites:
            if sprite.visible[i]:
                mask, _ = _mask(sprite.kind, sprite.size)
                cells = mask[::2, ::2]
                x, top, size = int(sprite.xs[i]), int(sprite.ys[i]), sprite.size
                cy, cu, cv = colours[sprite.colour]
                y[top : top + size, x : x + size][mask] = cy
                u[top // 2 : (top + size) // 2, x // 2 : (x + size) // 2][cells] = cu
                v[top // 2 : (top + size) // 2, x // 2 : (x + size) // 2][cells] = cv
        if time_bar:
            _draw_clock(y, u, v, i, sample.n_frames)
        yield np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(h * 3 // 2, w)


def _encode(path: Path, frames: Iterable[np.ndarray], options: SyntheticOptions) -> None:
    """Packed yuv420p frames to H.264 (libx264) in a temp file beside ``path``, then renamed.

    One thread, fixed preset, fixed GOP, no scene-cut keyframes and no macroblock tree: the
    bitstream then depends only on the pixels, so equal seeds give byte-identical files.
    """
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        with av.open(tmp, "w", format="mp4") as container:
            keyint = options.keyint
            stream = container.add_stream(
                "libx264",
                rate=options.fps,
                options={
                    "crf": str(options.crf),
                    "preset": "veryfast",
                    # mbtree off: with it, equal frames gave different bitstreams now and
                    # then (1 in ~20 encodes on this build), even single-threaded.
                    "x264-params": f"threads=1:keyint={keyint}:min-keyint={keyint}:scenecut=0"
                                   ":mbtree=0",
                },
            )
            stream.width, stream.height, stream.pix_fmt = options.width, options.height, "yuv420p"
            stream.codec_context.thread_count = 1
            stream.codec_context.gop_size = keyint
            for i, yuv in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- scenes


def _quadrant_tint(w: int, h: int, stage_h: int, strength: float) -> np.ndarray:
    """``(h, w, 3)`` RGB offsets of ``quadrant_tint``: red on the left, blue on the right,
    green on top, so the four quadrants of the stage (rows above ``stage_h``) differ in two
    channels each; the clock's strip below stays untinted."""
    tint = np.zeros((h, w, 3))
    tint[:stage_h, : w // 2, 0] = strength
    tint[:stage_h, w // 2 :, 2] = strength
    tint[: stage_h // 2, :, 1] = strength
    return tint


class _Scene:
    """Per-sample random choices shared by the task builders."""

    def __init__(self, rng: np.random.Generator, options: SyntheticOptions, mirror: int = 0):
        self.rng = rng
        self.w, self.h, self.fps = options.width, options.height, options.fps
        # Shapes live above the clock bar (when drawn), so it never hides them.
        self.stage_h = self.h - (_bar_height(self.h) if options.time_bar else 0)
        self.shape_scale, self.max_distractors = options.shape_scale, options.max_distractors
        self.options = options
        self.mirror = mirror  # XOR on a centre track's corner (SyntheticOptions.mirror_tracks)
        lo = int(np.ceil(options.min_duration_s * self.fps))
        hi = max(lo, int(np.floor(options.max_duration_s * self.fps)))
        self.n = int(rng.integers(lo, hi + 1))
        self.background = self._background()

    def _background(self) -> np.ndarray:
        """Grey with a slight tint; half the time a faint gradient and ripple texture."""
        rng = self.rng
        base = rng.uniform(95, 145) + rng.uniform(-8, 8, size=3)
        img = np.broadcast_to(base, (self.h, self.w, 3)).astype(np.float64)
        if rng.random() < 0.5:
            yy, xx = np.mgrid[0 : self.h, 0 : self.w]
            angle = rng.uniform(0, 2 * np.pi)
            ramp = (np.cos(angle) * xx / self.w + np.sin(angle) * yy / self.h) * rng.uniform(8, 20)
            fx, fy = rng.uniform(1, 4, size=2)
            ripple = 4 * np.sin(2 * np.pi * (fx * xx / self.w + fy * yy / self.h)
                                + rng.uniform(0, 2 * np.pi))
            img = img + (ramp + ripple)[..., None]
        if self.options.quadrant_tint:
            img = img + _quadrant_tint(self.w, self.h, self.stage_h, self.options.quadrant_tint)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def size(self, lo: float = 0.14, hi: float = 0.22) -> int:
        """An even side length: a share of the frame, but >= 7 cells so the kind is legible."""
        m = min(self.w, self.stage_h) / 2 * self.shape_scale
        return 2 * int(self.rng.integers(max(7, round(lo * m)), max(7, round(hi * m)) + 1))

    def distractors(self, lo: int, hi: int) -> int:
        """A distractor count in ``lo..hi``, capped at ``max_distractors``."""
        count = int(self.rng.integers(lo, hi + 1))
        return count if self.max_distractors is None else min(count, self.max_distractors)

    def colours(self, k: int) -> list[str]:
        return [str(c) for c in self.rng.choice(list(COLOURS), size=k, replace=False)]

    def kinds(self, k: int, distinct: bool = False) -> list[str]:
        return [str(s) for s in self.rng.choice(SHAPES, size=k, replace=not distinct)]

    def place(self, sizes: list[int], avoid: Sequence[tuple[int, int, int, int]] = (),
              gap: int = 4) -> list[tuple[int, int]]:
        """Top-left corners of non-overlapping squares (rejection sampling, retried whole)."""
        for _ in range(50):
            taken = list(avoid)
            spots: list[tuple[int, int]] = []
            for s in sizes:
                for _ in range(200):
                    x = 2 * int(self.rng.integers(0, (self.w - s) // 2 + 1))
                    y = 2 * int(self.rng.integers(0, (self.stage_h - s) // 2 + 1))
                    if all(x + s + gap <= bx0 or bx1 + gap <= x or y + s + gap <= by0
                           or by1 + gap <= y for bx0, by0, bx1, by1 in taken):
                        taken.append((x, y, x + s, y + s))
                        spots.append((x, y))
                        break
                else:
                    break
            if len(spots) == len(sizes):
                return spots
        raise ConfigError(f"synthetic: cannot place {len(sizes)} shapes without overlap in a "
                          f"{self.w}x{self.stage_h} area; use larger frames or "
                          "smaller shapes")

    def static(self, kind: str, colour: str, size: int, xy: tuple[int, int],
               visible: np.ndarray | None = None) -> _Sprite:
        n = self.n
        return _Sprite(kind, colour, size, np.full(n, xy[0]), np.full(n, xy[1]),
                       np.ones(n, dtype=bool) if visible is None else visible)

    def appearance(self) -> np.ndarray:
        """Visibility over one span of ``min_span_s`` .. ``max_span_s`` (default: 1 s .. 60% of
        the video), with ``span_margin_s`` of video before and after; on the ``span_grid_s``
        grid when set."""
        opts, fps = self.options, self.fps
        margin = int(np.ceil(opts.span_margin_s * fps - 1e-9))
        shortest = int(np.ceil(opts.min_span_s * fps - 1e-9))
        cap = (int(np.floor(opts.max_span_s * fps + 1e-9)) if opts.max_span_s is not None
               else int(0.6 * self.n))
        longest = max(shortest, min(self.n - 2 * margin, cap))
        if opts.span_grid_s is None:
            length = int(self.rng.integers(shortest, longest + 1))
            start = int(self.rng.integers(margin, self.n - margin - length + 1))
        else:
            step = round(opts.span_grid_s * fps)
            first = -(-margin // step) * step  # the first grid point after the margin
            spans = [(a, length) for length in range(step, self.n + 1, step)
                     if shortest <= length <= longest
                     for a in range(first, self.n - margin - length + 1, step)]
            if not spans:
                raise ConfigError(f"synthetic: no appearance of {opts.min_span_s}-"
                                  f"{opts.max_span_s} s on a {opts.span_grid_s} s grid fits a "
                                  f"{self.n / fps} s video with {opts.span_margin_s} s margins")
            start, length = spans[int(self.rng.integers(len(spans)))]
        visible = np.zeros(self.n, dtype=bool)
        visible[start : start + length] = True
        return visible


def _wordings(options: SyntheticOptions, templates: Sequence[str]) -> int:
    """How many of ``templates`` a sample may draw from (``options.wordings`` caps it)."""
    return min(options.wordings or len(templates), len(templates))


def _arrange(correct: str, wrong: list[str], position: int,
             rng: np.random.Generator) -> tuple[list[str], str]:
    """Options with the correct one at ``position`` (the others shuffled) and its letter."""
    others = [wrong[i] for i in rng.permutation(len(wrong))][: N_OPTIONS - 1]
    others.insert(position, correct)
    return others, OPTION_LETTERS[position]


_TG_TEMPLATES = (
    "the {c} {s} appears",
    "a {c} {s} is shown on screen",
    "the {c} {s} is visible",
    "a {c} {s} shows up and then disappears",
)


def _temporal_grounding(sc: _Scene, index: int, position: int | None) -> _Sample:
    n_distractors = sc.distractors(1, 3)
    colours = sc.colours(n_distractors + 1)
    kinds = sc.kinds(n_distractors + 1)
    sizes = [sc.size() for _ in colours]
    spots = sc.place(sizes)
    sprites = [sc.static(k, c, s, xy) for k, c, s, xy in
               zip(kinds[1:], colours[1:], sizes[1:], spots[1:], strict=True)]
    target = sc.static(kinds[0], colours[0], sizes[0], spots[0], sc.appearance())
    sprites.append(target)
    template = int(sc.rng.integers(_wordings(sc.options, _TG_TEMPLATES)))
    a, b, start, end = target.span(sc.fps)
    return _Sample(
        f"temporal_grounding_{index:04d}", "temporal_grounding", sc.n, sc.background, sprites,
        {"query": _TG_TEMPLATES[template].format(c=target.colour, s=target.kind)},
        [start, end],
        {"template": template, "shape": target.kind, "colour": target.colour,
         "frames": [a, b], "distractors": [s.name for s in sprites[:-1]]},
    )


def _free_area(sc: _Scene, size: int) -> np.ndarray:
    """Largest top-left (x, y) that keeps a shape of ``size`` inside the stage."""
    return np.array([sc.w - size, sc.stage_h - size], dtype=np.float64)


def _path(sc: _Scene, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame top-left of a moving shape: a line or a quadratic Bezier inside the frame."""
    rng, hi = sc.rng, _free_area(sc, size)
    for _ in range(100):
        p0, p2 = rng.uniform(0, 1, size=2) * hi, rng.uniform(0, 1, size=2) * hi
        if np.linalg.norm((p2 - p0) / hi) >= 0.5:  # travels a good part of the frame
            break
    kind = "curve" if rng.random() < 0.5 else "linear"
    p1 = rng.uniform(0, 1, size=2) * hi if kind == "curve" else (p0 + p2) / 2
    t = np.linspace(0.0, 1.0, sc.n)[:, None]
    # Bezier points stay in the convex hull of the control points, hence inside the frame.
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    points = np.clip(_even(points), 0, hi.astype(int))
    return points[:, 0], points[:, 1], kind


#: The frame's corners as shares of the free area (top-left, top-right, bottom-left, bottom-right).
_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float64)


def _line(sc: _Scene, hi: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """Per-frame top-left (xs, ys) of a shape going from pixel ``start`` to ``end`` at
    constant speed, on the even-pixel grid and inside the free area ``hi``."""
    t = np.linspace(0.0, 1.0, sc.n)[:, None]
    points = np.clip(_even((1 - t) * start + t * end), 0, hi.astype(int))
    return points[:, 0], points[:, 1]


def _corner_path(sc: _Scene, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame top-left of a shape crossing from one corner of the frame to another, at
    constant speed: 4 starts x 3 ends (along an edge or across the diagonal)."""
    hi = _free_area(sc, size)
    start = int(sc.rng.integers(4))
    end = [c for c in range(4) if c != start][int(sc.rng.integers(3))]
    return *_line(sc, hi, _CORNERS[start] * hi, _CORNERS[end] * hi), f"corner {start} to {end}"


def _centre_path(sc: _Scene, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame top-left of a shape going from the centre of the frame to one of its corners,
    at constant speed. The four tracks are mirror images of each other, so a blind guess of
    any one of them expects the same score: there is no prior for GRPO to learn instead."""
    hi = _free_area(sc, size)
    end = int(sc.rng.integers(4)) ^ sc.mirror  # corners 0-3: bit 0 is x, bit 1 is y
    return *_line(sc, hi, _even(hi / 2), _CORNERS[end] * hi), f"centre to {end}"


#: Straight tracks at one size, by ``tracking_paths`` value (``free`` uses :func:`_path`).
_STRAIGHT_PATHS = {"corners": _corner_path, "centre": _centre_path}


def _tracking(sc: _Scene, index: int, position: int | None) -> _Sample:
    n_distractors = sc.distractors(0, 2)
    colours = sc.colours(n_distractors + 1)
    kinds = sc.kinds(n_distractors + 1)
    sizes = [sc.size() for _ in range(n_distractors)]
    spots = sc.place(sizes)  # distractors may lie on the path: the target is drawn on top
    sprites = [sc.static(k, c, s, xy) for k, c, s, xy in
               zip(kinds[1:], colours[1:], sizes, spots, strict=True)]
    straight = _STRAIGHT_PATHS.get(sc.options.tracking_paths)
    if straight:
        tsize = sc.size(0.22, 0.22)
        xs, ys, path = straight(sc, tsize)
    else:
        tsize = sc.size(0.18, 0.26)
        xs, ys, path = _path(sc, tsize)
    target = _Sprite(kinds[0], colours[0], tsize, xs, ys, np.ones(sc.n, dtype=bool))
    sprites.append(target)
    indices = sample_indices(sc.n, TRACKING_BOXES)
    return _Sample(
        f"tracking_{index:04d}", "tracking", sc.n, sc.background, sprites,
        {"object": target.name},
        [target.box(i, sc.w, sc.h) for i in indices],
        {"shape": target.kind, "colour": target.colour, "path": path,
         "sample_indices": indices, "distractors": [s.name for s in sprites[:-1]]},
    )


_GQA_SHAPE_TEMPLATES = (
    "Which shape appears for a while and then disappears?",
    "Which shape is only visible during part of the video?",
)
_GQA_COLOUR_TEMPLATES = (
    "What colour is the {s} that appears for a while and then disappears?",
    "What colour is the {s} that is only visible during part of the video?",
)


def _grounded_qa(sc: _Scene, index: int, position: int | None) -> _Sample:
    assert position is not None
    n_distractors = sc.distractors(1, 2)
    colours = sc.colours(n_distractors + 1)
    kinds = sc.kinds(n_distractors + 1, distinct=True)  # the target's kind names it uniquely
    sizes = [sc.size() for _ in colours]
    spots = sc.place(sizes)
    questions = sc.options.gqa_questions
    qtype = questions[index % len(questions)]
    canonical = sc.options.canonical_options
    if canonical:  # the answer is the shape (colour) whose letter is due; all stay distinct
        due = kinds if qtype == "shape" else colours
        wanted = (SHAPES if qtype == "shape" else CANONICAL_COLOURS)[position]
        if wanted in due:
            swap = due.index(wanted)
            due[0], due[swap] = due[swap], due[0]
        else:
            due[0] = wanted
    sprites = [sc.static(k, c, s, xy) for k, c, s, xy in
               zip(kinds[1:], colours[1:], sizes[1:], spots[1:], strict=True)]
    target = sc.static(kinds[0], colours[0], sizes[0], spots[0], sc.appearance())
    sprites.append(target)
    template = int(sc.rng.integers(_wordings(sc.options, _GQA_SHAPE_TEMPLATES)))
    if qtype == "shape":
        question = _GQA_SHAPE_TEMPLATES[template]
        if canonical:
            options, answer = list(SHAPES), OPTION_LETTERS[position]
        else:
            wrong = [k for k in SHAPES if k != target.kind]
            options, answer = _arrange(target.kind, wrong, position, sc.rng)
    else:
        question = _GQA_COLOUR_TEMPLATES[template].format(s=target.kind)
        if canonical:
            options, answer = list(CANONICAL_COLOURS), OPTION_LETTERS[position]
        else:
            # The colours on screen are the hard negatives; fill up with random others.
            rest = [c for c in sc.colours(len(COLOURS)) if c not in colours]
            wrong = (colours[1:] + rest)[: N_OPTIONS - 1]
            options, answer = _arrange(target.colour, wrong, position, sc.rng)
    a, b, start, end = target.span(sc.fps)
    return _Sample(
        f"grounded_qa_{index:04d}", "grounded_qa", sc.n, sc.background, sprites,
        {"question": question, "options": options},
        {"answer": answer, "glue": [[start, end]]},
        {"question_type": qtype, "template": template, "shape": target.kind,
         "colour": target.colour, "frames": [a, b],
         "distractors": [s.name for s in sprites[:-1]]},
    )


def _direction_path(sc: _Scene, size: int, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """A straight move mostly along one axis (side drift <= 15% of the frame)."""
    rng = sc.rng
    along_hi = (sc.w if direction in ("left", "right") else sc.stage_h) - size
    across_hi = (sc.stage_h if direction in ("left", "right") else sc.w) - size
    travel = rng.uniform(0.45, 0.85) * along_hi
    a0 = rng.uniform(0, along_hi - travel)
    a1 = a0 + travel
    if direction in ("left", "up"):
        a0, a1 = along_hi - a0, along_hi - a1
    drift = rng.uniform(-0.15, 0.15) * across_hi
    c0 = rng.uniform(max(0.0, -drift), min(across_hi, across_hi - drift))
    t = np.linspace(0.0, 1.0, sc.n)
    along = np.clip(_even(a0 + (a1 - a0) * t), 0, along_hi)
    across = np.clip(_even(c0 + drift * t), 0, across_hi)
    return (along, across) if direction in ("left", "right") else (across, along)


def _mcq(sc: _Scene, index: int, position: int | None) -> _Sample:
    assert position is not None
    questions, canonical = sc.options.mcq_questions, sc.options.canonical_options
    qtype = questions[index % len(questions)]
    if qtype == "direction":
        direction = DIRECTIONS[int(sc.rng.integers(len(DIRECTIONS)))]
        if canonical:
            direction = DIRECTIONS[position]
        n_distractors = sc.distractors(0, 2)
        colours = sc.colours(n_distractors + 1)
        kinds = sc.kinds(n_distractors + 1)
        tsize = sc.size()
        xs, ys = _direction_path(sc, tsize, direction)
        swept = (int(xs.min()), int(ys.min()), int(xs.max()) + tsize, int(ys.max()) + tsize)
        sizes = [sc.size() for _ in range(n_distractors)]
        try:
            spots = sc.place(sizes, avoid=[swept])
        except ConfigError:  # no room beside the path: go without distractors
            spots, sizes, colours, kinds = [], [], colours[:1], kinds[:1]
        sprites = [sc.static(k, c, s, xy) for k, c, s, xy in
                   zip(kinds[1:], colours[1:], sizes, spots, strict=True)]
        target = _Sprite(kinds[0], colours[0], tsize, xs, ys, np.ones(sc.n, dtype=bool))
        sprites.append(target)
        question = f"In which direction does the {target.name} move?"
        if canonical:
            options, answer = list(DIRECTIONS), OPTION_LETTERS[position]
        else:
            options, answer = _arrange(direction, [d for d in DIRECTIONS if d != direction],
                                       position, sc.rng)
        meta = {"question_type": qtype, "direction": direction, "shape": target.kind,
                "colour": target.colour, "distractors": [s.name for s in sprites[:-1]]}
    else:
        # Options: four consecutive counts from `first` (canonical: always 1-4).
        first = 1 if canonical else int(sc.rng.integers(1, 4))
        count = first + position
        colours = sc.colours(count)
        kinds = sc.kinds(count)
        sizes = [sc.size() for _ in range(count)]
        spots = sc.place(sizes)
        sprites = [sc.static(k, c, s, xy) for k, c, s, xy in
                   zip(kinds, colours, sizes, spots, strict=True)]
        question = "How many shapes are in the video?"
        options = [str(first + k) for k in range(N_OPTIONS)]
        answer = OPTION_LETTERS[position]
        meta = {"question_type": qtype, "count": count, "shapes": [s.name for s in sprites]}
    return _Sample(f"mcq_{index:04d}", "mcq", sc.n, sc.background, sprites,
                   {"question": question, "options": options}, {"answer": answer}, meta)


_BUILDERS = {
    "temporal_grounding": _temporal_grounding,
    "tracking": _tracking,
    "grounded_qa": _grounded_qa,
    "mcq": _mcq,
}


def _samples(options: SyntheticOptions) -> Iterator[_Sample]:
    """Every sample, each from its own random stream (seed, task, index)."""
    for t, task in enumerate(TASKS):
        if not options.count(task):
            continue
        index = 0
        for b, (split, size) in enumerate(options.blocks(task)):
            # Balanced answer letters within each split: each position size//4 or size//4 + 1
            # times, shuffled (a split's letters do not depend on the other splits' sizes).
            letters = np.random.default_rng([options.seed, t, 2] + ([b] if split else []))
            positions = letters.permutation([k % N_OPTIONS for k in range(size)])
            for position in positions:
                mirrored = options.mirror_tracks and task == "tracking"
                rng = np.random.default_rng([options.seed, t, 1, index // 4 if mirrored else index])
                scene = _Scene(rng, options, mirror=index % 4 if mirrored else 0)
                sample = _BUILDERS[task](scene, index, int(position))
                sample.split = split
                sample.meta.update(seed=options.seed, index=index, n_frames=sample.n_frames,
                                   fps=options.fps)
                yield sample
                index += 1


def _record(sample: _Sample, options: SyntheticOptions) -> dict[str, Any]:
    return make_record(
        id=sample.native_id,
        task=sample.task,
        source="synthetic",
        video=f"{VIDEO_DIR}/{sample.native_id}.mp4",
        nframes=video_tasks.get(sample.task).nframes,
        duration=sample.n_frames / options.fps,
        inputs=sample.inputs,
        solution=sample.solution,
        split=sample.split,
        meta=sample.meta,
    )


# --------------------------------------------------------------------------- public API


def _up_to_date(folder: Path, fingerprint: str) -> bool:
    """True when a finished generation with the same options is already in ``folder``."""
    annotations, marker = folder / ANNOTATIONS_FILE, folder / GENERATOR_FILE
    if not (annotations.is_file() and marker.is_file()):
        return False
    try:
        info = read_json(marker)
    except DataValidationError:
        return False
    if not isinstance(info, dict) or info.get("options_hash") != fingerprint:
        return False
    videos = info.get("videos")
    return isinstance(videos, list) and all(
        isinstance(v, str) and (folder / VIDEO_DIR / v).is_file() for v in videos
    )


def _write_video(job: tuple[Path, _Sample, SyntheticOptions]) -> None:
    path, sample, options = job
    _encode(path, _render(sample, options.time_bar), options)


def generate(config: SourceParams, folder: Path) -> None:
    """Render the videos and ``annotations.jsonl`` into ``folder``, unless already done.

    Videos are encoded by one process per CPU when there are enough of them (each video is
    encoded alone, single-threaded, so the bytes do not depend on which process wrote it).
    Idempotent: with the same options (hash in ``generator.json``) and all videos present,
    nothing is touched. Otherwise the old annotations are removed first, videos are written to
    temp names and renamed, stale videos of ours are deleted, and the annotations are written
    last, so a generation killed half-way is always redone.
    """
    options = load_options(config)
    folder = Path(folder)
    fingerprint = options_hash(options)
    if _up_to_date(folder, fingerprint):
        return
    video_dir = folder / VIDEO_DIR
    (folder / ANNOTATIONS_FILE).unlink(missing_ok=True)
    (folder / GENERATOR_FILE).unlink(missing_ok=True)
    video_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []

    def jobs() -> Iterator[tuple[Path, _Sample, SyntheticOptions]]:
        """Samples one at a time (each holds its frames' background), recorded as they go."""
        for sample in _samples(options):
            records.append(_record(sample, options))
            yield video_dir / f"{sample.native_id}.mp4", sample, options

    total = sum(options.count(task) for task in options.tasks)
    workers = min(available_cpus(), total // MIN_VIDEOS_PER_WORKER)
    if workers > 1:  # each video stands alone: same bytes whichever process encodes it
        context = multiprocessing.get_context("spawn")  # never fork a threaded parent
        pending = jobs()
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            # A bounded batch at a time: Executor.map takes its whole input at once.
            while batch := list(itertools.islice(pending, workers * MIN_VIDEOS_PER_WORKER)):
                for _ in pool.map(_write_video, batch, chunksize=MIN_VIDEOS_PER_WORKER // 4):
                    pass
    else:
        for job in jobs():
            _write_video(job)
    names = {PurePosixPath(r["video"]).name for r in records}
    for path in video_dir.iterdir():
        stale_video = _VIDEO_NAME.match(path.name) and path.name not in names
        leftover = path.name.startswith(".") and path.name.endswith(".tmp")
        if stale_video or leftover:
            path.unlink(missing_ok=True)
    atomic_write_json(folder / GENERATOR_FILE, {
        "generator": "videorft.sources.synthetic",
        "version": GENERATOR_VERSION,
        "options_hash": fingerprint,
        "options": options.model_dump(mode="json"),
        "pyav": av.__version__,
        "videos": sorted(names),
    })
    write_jsonl(folder / ANNOTATIONS_FILE, records)


def _rebase(row: dict[str, Any], config: SourceParams, prefix: str, file: str) -> dict[str, Any]:
    """Prefix id and paths so they are unique and relative to the raw data root."""
    row = dict(row)
    native = row.get("id")
    if isinstance(native, str) and native.strip():
        row["id"] = f"{config.name}/{native}"
    row["source"] = config.name
    where = {"file": file, "record": row["id"] if isinstance(native, str) else None}

    def under(rel: Any) -> Any:
        if not isinstance(rel, str):
            return rel  # left for validate_record to reject
        return PurePosixPath(prefix, check_relative_path(rel, **where)).as_posix()

    row["video"] = under(row.get("video"))
    if isinstance(row.get("frames"), list):
        row["frames"] = [under(f) for f in row["frames"]]
    if config.split is not None:
        row["split"] = config.split
    return row


def _items(config: SourceParams, annotations: Path, prefix: str) -> Iterator[Item]:
    """One item per annotation line: the re-based record, or the error that line raises."""
    file = str(annotations)
    for number, line in enumerate(read_text(annotations).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = parse_json_line(line, number, file)
        except DataValidationError as exc:
            yield exc, file
            continue
        if not isinstance(row, dict):
            yield DataValidationError(f"line {number}: expected a JSON object", file=file), file
            continue
        try:
            yield _rebase(row, config, prefix, file), file
        except DataValidationError as exc:
            yield exc, file


def parse(
    config: SourceParams,
    folder: Path,
    raw_root: Path,
    *,
    duration_tolerance: float = 0.0,
    on_invalid: OnInvalid | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the generated records with ids ``<name>/<native id>`` and root-relative paths.

    Every record is validated (ids too, for duplicates); a malformed one raises
    DataValidationError naming ``annotations.jsonl`` and the record id, or goes to
    ``on_invalid`` and is skipped, as with every other source.
    """
    annotations = Path(folder) / ANNOTATIONS_FILE
    if not annotations.is_file():
        raise DataValidationError("not found (the synthetic source writes it in generate())",
                                  file=str(annotations))
    prefix = root_relative(folder, raw_root)
    return emit(_items(config, annotations, prefix), empty_file=str(annotations),
                duration_tolerance=duration_tolerance, on_invalid=on_invalid)
