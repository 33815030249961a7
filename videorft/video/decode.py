"""Video decoders: probe a file, then deliver chosen frames as uint8 RGB at a chosen size.

``read_frames_pyav`` is the production path. Sampling Qwen-style keeps ~1 frame in 15, so
the work that matters is what is spent on the other 14:

- frames that are neither wanted nor referenced by other frames (most B-frames) are not
  decoded at all (``skip_frame = NONREF`` set per packet, off for the packets we want);
- only wanted frames are converted, and conversion and resize are one swscale call at the
  target size (a full-size RGB copy of every frame costs as much as decoding it);
- when the next wanted frame is more than about one GOP ahead, we seek to its keyframe;
- a long video is cut into chunks of wanted frames decoded in parallel threads (each from
  the keyframe before its first frame); a short one uses FFmpeg's frame threading.

Frames are matched to indices by timestamp (constant frame rate assumed, as Qwen's loaders
assume): ``index = round((pts - first_pts) * time_base * fps)``. Anything that breaks that
assumption (missing timestamps, duplicates, a wanted frame that never shows up) makes the
reader start over in plain decode order, which is what ``decode_all_then_sample`` (the test
oracle and naive baseline) does, so the answer never depends on the file's quirks.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image

from videorft.errors import VideoDecodeError

Size = tuple[int, int]  # (height, width)

# swscale's bicubic filter widens with the scale ratio, so downscaling is antialiased
# (like PIL's and torchvision's antialias=True bicubic, which Qwen's loader uses).
INTERPOLATION = Interpolation.BICUBIC
# FFmpeg frame + slice threading for our reader (PyAV's default is slice threading only,
# which does nothing for the usual one-slice-per-frame H.264).
THREAD_TYPE = "AUTO"


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (frame count checked by decoding its start)."""

    total_frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    # False when the container does not store a frame count and it was estimated as
    # duration * fps; the real count can then be off by a frame or two.
    frames_exact: bool = True


class ShortVideoError(VideoDecodeError):
    """The stream ended before a wanted frame: fewer frames than the container claimed."""

    def __init__(self, message: str, available: int = 0):
        super().__init__(message)
        self.available = available


def _check_file(path: Path) -> None:
    """Fail fast, with a reason, on the common non-video cases before FFmpeg sees them."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise VideoDecodeError(f"{path}: file not found") from None
    except OSError as exc:
        raise VideoDecodeError(f"{path}: cannot stat ({exc.strerror or exc})") from None
    if not path.is_file():
        raise VideoDecodeError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")


def _open(path: Path) -> av.container.InputContainer:
    _check_file(path)
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise VideoDecodeError(f"{path}: cannot open as a video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path}: no video stream")
    return container


def _reason(exc: BaseException) -> str:
    # FFmpeg errors carry the errno and file name in str(); the path is already in our message.
    text = getattr(exc, "strerror", None) if isinstance(exc, av.error.FFmpegError) else None
    text = (text or str(exc)).strip() or type(exc).__name__
    return text.replace("\n", " ")[:300]


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    raise VideoDecodeError("unknown frame rate")


def probe(path: str | os.PathLike) -> VideoInfo:
    """Frame count, rate, duration, size and codec; raises VideoDecodeError naming the file.

    The first frame is decoded, so a file whose codec is unknown or whose data is garbage
    fails here rather than halfway through extraction.
    """
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        try:
            codec = stream.codec_context.name
        except (av.error.FFmpegError, AttributeError) as exc:
            raise VideoDecodeError(f"{path}: unknown codec ({_reason(exc)})") from None
        try:
            rate = _frame_rate(stream)
        except VideoDecodeError:
            raise VideoDecodeError(f"{path}: unknown frame rate") from None
        time_base = stream.time_base
        if stream.duration and time_base:
            duration = float(stream.duration * time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames_exact = bool(stream.frames and stream.frames > 0)
        total = int(stream.frames) if frames_exact else round(duration * rate)
        try:
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise VideoDecodeError(f"{path}: undecodable {codec} data ({_reason(exc)})") from None
        if first is None:
            raise VideoDecodeError(f"{path}: no decodable frame ({codec})")
        if total < 1:
            raise VideoDecodeError(f"{path}: container reports no frames and no duration")
        if duration <= 0:
            duration = total / rate
        return VideoInfo(
            total_frames=total,
            fps=float(rate),
            duration=float(duration),
            width=int(first.width),
            height=int(first.height),
            codec=codec,
            frames_exact=frames_exact,
        )
    finally:
        container.close()


class _Converter:
    """Wanted frame -> uint8 RGB array at the target size, reusing one swscale context."""

    def __init__(self, size: Size | None):
        self.size = size
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            height, width = frame.height, frame.width
        else:
            height, width = self.size
        out = self.reformatter.reformat(
            frame, width=width, height=height, format="rgb24", interpolation=INTERPOLATION
        )
        return out.to_ndarray()


class _Irregular(Exception):
    """Timestamps do not follow a constant frame rate; start over in decode order."""


def _validate_indices(indices: Sequence[int], path: Path) -> list[int]:
    wanted = [int(i) for i in indices]
    if not wanted:
        raise ValueError(f"{path}: no frame indices given")
    if min(wanted) < 0:
        raise ValueError(f"{path}: negative frame index {min(wanted)}")
    return wanted


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# Threads one read_frames_pyav call may use (extract_frames' workers lower it so that
# workers x threads matches the CPUs).
DECODE_THREADS = available_cpus()
# Wanted frames spanning fewer frames than this per chunk are read by one decoder: a chunk
# starts at the keyframe before its first frame, so a chunk shorter than a couple of GOPs
# (x264's default GOP is 250 frames) would mostly re-decode its neighbour's frames.
MIN_CHUNK_SPAN = 600


def _chunks(unique: list[int], threads: int) -> list[list[int]]:
    """Split sorted wanted indices into contiguous runs, one per decoder thread."""
    span = unique[-1] - unique[0]
    count = max(1, min(threads, span // MIN_CHUNK_SPAN, len(unique)))
    bounds = [round(i * len(unique) / count) for i in range(count + 1)]
    return [unique[a:b] for a, b in itertools.pairwise(bounds)]


def read_frames_pyav(
    path: str | os.PathLike,
    indices: Sequence[int],
    size: Size | None = None,
    *,
    threads: int | None = None,
    stats: dict[str, int] | None = None,
) -> np.ndarray:
    """Frames ``indices`` of the video as uint8 [T, H, W, 3] RGB, resized to ``size`` (h, w).

    Gives exactly the frames of ``decode_all_then_sample`` (same index), much faster.
    Long spans are cut into ``threads`` chunks decoded in parallel (PyAV releases the GIL),
    each from the keyframe before its first frame; a single chunk uses FFmpeg's frame
    threading instead. ``stats``, when given, is filled with counters (frames decoded,
    seeks, chunks, whether the decode-order fallback ran) for tests and the benchmark.
    """
    path = Path(path)
    wanted = _validate_indices(indices, path)
    unique = sorted(set(wanted))
    threads = max(1, threads or DECODE_THREADS)
    counters = stats if stats is not None else {}
    counters.update(decoded=0, converted=0, seeks=0, overshoots=0, fallback=0, chunks=0)
    try:
        try:
            got = _read_chunks(path, _chunks(unique, threads), size, threads, counters)
        except _Irregular:
            counters["fallback"] = 1
            with contextlib.closing(_open(path)) as container:
                _set_threads(container.streams.video[0], threads)
                got = _read_in_order(container, unique, _Converter(size), path, counters)
        counters["converted"] = len(got)
    except (av.error.FFmpegError, OSError, ValueError, MemoryError) as exc:
        if isinstance(exc, VideoDecodeError):
            raise
        raise VideoDecodeError(f"{path}: decoding failed ({_reason(exc)})") from None
    return np.stack([got[i] for i in wanted])


def _set_threads(stream: av.video.stream.VideoStream, threads: int) -> None:
    stream.thread_type = THREAD_TYPE
    # 0 lets FFmpeg pick (CPUs + 1 frame threads), which does best when we own the machine.
    stream.codec_context.thread_count = 0 if threads >= available_cpus() else threads


def _first_pts(path: Path) -> int:
    """Timestamp of frame 0, which chunks that start mid-video count indices from."""
    with contextlib.closing(_open(path)) as container:
        first = next(container.decode(video=0), None)
    if first is None:
        raise ShortVideoError(f"{path}: no decodable frame", available=0)
    if first.pts is None:
        raise _Irregular
    return int(first.pts)


def _read_chunks(
    path: Path, chunks: list[list[int]], size: Size | None, threads: int,
    counters: dict[str, int],
) -> dict[int, np.ndarray]:
    counters["chunks"] = len(chunks)
    if len(chunks) == 1:
        with contextlib.closing(_open(path)) as container:
            _set_threads(container.streams.video[0], threads)
            return _read_by_timestamp(container, chunks[0], _Converter(size), path, counters)
    origin = _first_pts(path)
    per_chunk = max(1, threads // len(chunks))

    def read(chunk: list[int]) -> tuple[dict[int, np.ndarray], dict[str, int]]:
        own: dict[str, int] = dict.fromkeys(counters, 0)
        with contextlib.closing(_open(path)) as container:
            _set_threads(container.streams.video[0], per_chunk)
            got = _read_by_timestamp(container, chunk, _Converter(size), path, own,
                                     origin=origin)
        return got, own

    got: dict[int, np.ndarray] = {}
    with ThreadPoolExecutor(max_workers=len(chunks), thread_name_prefix="decode") as pool:
        futures = [pool.submit(read, chunk) for chunk in chunks]
        errors = [f.exception() for f in futures]
    irregular = [e for e in errors if isinstance(e, _Irregular)]
    if irregular:
        raise irregular[0]
    for error in errors:
        if error is not None:
            raise error
    for future in futures:
        part, own = future.result()
        got.update(part)
        for key in ("decoded", "seeks", "overshoots"):
            counters[key] += own[key]
    return got


def _demux_decode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    skip_packet: Any,
) -> Iterator[tuple[av.VideoFrame, int | None]]:
    """Decode packet by packet, letting ``skip_packet(packet)`` set skip_frame for each.

    Yields (frame, largest packet pts seen so far), the latter to know how far the stream
    went when skipped frames never come out.
    """
    ctx = stream.codec_context
    max_pts: int | None = None
    for packet in container.demux(stream):
        if packet.pts is not None:
            max_pts = packet.pts if max_pts is None else max(max_pts, packet.pts)
        if packet.size:
            ctx.skip_frame = "NONREF" if skip_packet(packet) else "DEFAULT"
        else:
            ctx.skip_frame = "DEFAULT"
        for frame in packet.decode():
            yield frame, max_pts


def _read_by_timestamp(
    container: av.container.InputContainer,
    wanted: list[int],
    convert: _Converter,
    path: Path,
    counters: dict[str, int],
    *,
    origin: int | None = None,
) -> dict[int, np.ndarray]:
    """Seek-and-skip reader (see module docstring). Raises _Irregular on non-CFR timing.

    ``origin`` (the pts of frame 0) is given for chunks that start mid-video: they begin
    with a seek to their first frame. Without it, decoding starts at the beginning and the
    first frame out defines it.
    """
    stream = container.streams.video[0]
    frames_per_tick = Fraction(stream.time_base) * _frame_rate(stream)
    wanted_set = set(wanted)
    got: dict[int, np.ndarray] = {}
    keyframes: list[int] = []  # indices of keyframes seen
    run_kf: int | None = None  # last keyframe of the current run (decoded without a seek)
    gop = 1  # longest keyframe interval seen (a lower bound on the GOP)
    pos = -1  # furthest frame index output so far
    next_i = 0  # position in `wanted` of the next frame to deliver
    max_pts: int | None = None

    def index_of(pts: int) -> int:
        assert origin is not None
        return round((pts - origin) * frames_per_tick)

    def skip_packet(packet: av.Packet) -> bool:
        # Until frame 0 has come out (or without timestamps), decode everything.
        if origin is None or packet.pts is None:
            return False
        return index_of(packet.pts) not in wanted_set

    def seek_to(index: int) -> Iterator[tuple[av.VideoFrame, int | None]]:
        assert origin is not None
        offset = origin + math.floor(Fraction(index) / frames_per_tick)
        container.seek(offset, stream=stream, backward=True, any_frame=False)
        counters["seeks"] += 1
        return _demux_decode(container, stream, skip_packet)

    run_prev: int | None = None  # last index output since the last (re)start
    run_target: int | None = None  # the frame the last seek was for
    retried = False  # a seek overshot once already: no more seeking
    if origin is not None and wanted[0] > 0:
        keyframes.append(0)  # frame 0 is a keyframe: where to go back to if a seek overshoots
        frames = seek_to(wanted[0])
        run_target = wanted[0]
    else:
        frames = _demux_decode(container, stream, skip_packet)
    while next_i < len(wanted):
        try:
            frame, max_pts = next(frames)
        except StopIteration:
            available = pos + 1
            if origin is not None and max_pts is not None:
                available = max(available, index_of(max_pts) + 1)
            raise ShortVideoError(
                f"{path}: the stream ends before frame {wanted[next_i]} (last frame decoded: "
                f"{pos}); truncated file, or a wrong frame count in the container",
                available=available,
            ) from None
        counters["decoded"] += 1
        if frame.pts is None:
            raise _Irregular
        if origin is None:
            origin = frame.pts
        index = index_of(frame.pts)
        if run_prev is not None and index <= run_prev:
            raise _Irregular  # duplicate or backwards timestamps
        if run_prev is None and run_target is not None and index > run_target:
            # The seek landed past the frame we want (seeking goes by decode timestamps):
            # go back to a keyframe we have seen, once.
            known = [k for k in keyframes if k <= run_target]
            if retried or not known:
                raise _Irregular
            retried = True
            counters["overshoots"] += 1
            frames = seek_to(max(known))
            run_kf = None
            continue
        run_prev = index
        if frame.key_frame:
            # Only intervals decoded without a seek in between are real GOPs.
            if run_kf is not None:
                gop = max(gop, index - run_kf)
            run_kf = index
            if index not in keyframes:
                keyframes.append(index)
        pos = max(pos, index)
        if index in wanted_set and index not in got:
            got[index] = convert(frame)
        while next_i < len(wanted) and wanted[next_i] <= pos:
            if wanted[next_i] not in got:
                raise _Irregular  # a wanted frame never came out: not constant frame rate
            next_i += 1
        if next_i == len(wanted):
            break
        # The current GOP is at least as long as the run since its keyframe; when the next
        # wanted frame is further ahead than the longest GOP, a keyframe lies in between.
        if run_kf is not None:
            gop = max(gop, index - run_kf + 1)
        target = wanted[next_i]
        if target - pos > gop and target != run_target and not retried:
            frames = seek_to(target)
            run_prev, run_target, run_kf = None, target, None
    return got


def _read_in_order(
    container: av.container.InputContainer,
    wanted: list[int],
    convert: _Converter,
    path: Path,
    counters: dict[str, int],
) -> dict[int, np.ndarray]:
    """Fallback: count frames in output order (no seeking, no skipping), convert wanted ones."""
    stream = container.streams.video[0]
    wanted_set = set(wanted)
    last = wanted[-1]
    got: dict[int, np.ndarray] = {}
    count = 0
    for index, frame in enumerate(container.decode(stream)):
        count = index + 1
        counters["decoded"] += 1
        if index in wanted_set:
            got[index] = convert(frame)
        if index >= last:
            return got
    raise ShortVideoError(
        f"{path}: the stream ends before frame {last} (last frame decoded: {count - 1}); "
        f"truncated file, or a wrong frame count in the container",
        available=count,
    )


def decode_all_then_sample(
    path: str | os.PathLike, indices: Sequence[int], size: Size | None = None
) -> np.ndarray:
    """The naive loader: decode every frame with PyAV's defaults, convert each to RGB, keep
    the wanted ones, resize them (PIL bicubic).

    Used as the benchmark baseline and as the test oracle for which frame has which index.
    Without ``size`` its pixels are exactly read_frames_pyav's.
    """
    path = Path(path)
    wanted = _validate_indices(indices, path)
    wanted_set = set(wanted)
    last = max(wanted)
    got: dict[int, np.ndarray] = {}
    container = _open(path)
    count = 0
    try:
        for index, frame in enumerate(container.decode(video=0)):
            count = index + 1
            rgb = frame.to_ndarray(format="rgb24")
            if index in wanted_set:
                got[index] = rgb
            if index >= last:
                break
    except av.error.FFmpegError as exc:
        raise VideoDecodeError(f"{path}: decoding failed ({_reason(exc)})") from None
    finally:
        container.close()
    if last not in got:
        raise ShortVideoError(
            f"{path}: the stream ends before frame {last} (last frame decoded: {count - 1})",
            available=count,
        )
    return resize_frames(np.stack([got[i] for i in wanted]), size)


def resize_frames(frames: np.ndarray, size: Size | None) -> np.ndarray:
    """Resize uint8 [T, H, W, 3] frames to ``size`` (h, w) with PIL bicubic (antialiased)."""
    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return np.ascontiguousarray(frames)
    height, width = size
    out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame, mode="RGB")
        out[i] = np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))
    return out


def read_frames_decord(
    path: str | os.PathLike, indices: Sequence[int], size: Size | None = None
) -> np.ndarray:
    """Frames via decord (``VideoReader.get_batch``), resized like decode_all_then_sample.

    decord is optional (x86_64 wheels only) and is imported only when asked for.
    """
    path = Path(path)
    wanted = _validate_indices(indices, path)
    try:
        decord = importlib.import_module("decord")
    except ImportError:
        raise VideoDecodeError(
            "the decord backend needs the 'decord' package (pip install 'videorft[decord]'; "
            "x86_64 only), or set extract_frames.backend: pyav"
        ) from None
    _check_file(path)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        total = len(reader)
        if max(wanted) >= total:
            raise ShortVideoError(
                f"{path}: video has {total} frames but frame {max(wanted)} was requested",
                available=total,
            )
        batch = reader.get_batch(wanted).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as exc:  # decord raises its own DECORDError (a RuntimeError) and others
        raise VideoDecodeError(f"{path}: decord failed ({_reason(exc)})") from None
    return resize_frames(batch, size)


def read_image_frames(paths: Sequence[str | os.PathLike], size: Size | None = None) -> np.ndarray:
    """A listed frame sequence (JPEG/PNG files) as uint8 [T, H, W, 3], resized like video."""
    if not paths:
        raise VideoDecodeError("frame sequence is empty")
    frames = []
    for p in paths:
        p = Path(p)
        _check_file(p)
        try:
            with Image.open(p) as image:
                rgb = image.convert("RGB")
                if size is not None and rgb.size != (size[1], size[0]):
                    rgb = rgb.resize((size[1], size[0]), Image.Resampling.BICUBIC)
                frames.append(np.asarray(rgb))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise VideoDecodeError(f"{p}: cannot read image ({_reason(exc)})") from None
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoDecodeError(
            f"{Path(paths[0]).parent}: frames differ in size {sorted(shapes)}; give a size"
        )
    return np.stack(frames)


def image_size(path: str | os.PathLike) -> Size:
    """(height, width) of an image file without decoding its pixels."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoDecodeError(f"{path}: cannot read image ({_reason(exc)})") from None
    return height, width
