"""The worker side of extract_frames: sample one item and write it into the frame store.

:func:`extract_one` runs in a child process whichever executor is in use (a process of the
local pool, or a Dask worker's decoder child), so both executors write the same bytes and
report the same reasons. It writes the item's ``.npy`` first, then the ``.json`` that marks
it done, each atomically: a worker killed mid-item leaves nothing that counts as done.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import hashlib
import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from videorft.errors import DataValidationError, VideoDecodeError
from videorft.io import atomic_write_bytes, atomic_write_json, safe_join, sha256_bytes, sha256_file
from videorft.video import decode
from videorft.video.decode import (
    ShortVideoError,
    image_size,
    probe,
    read_frames_decord,
    read_frames_pyav,
    read_image_frames,
)
from videorft.video.plan import IMAGES_BACKEND, ExtractionItem
from videorft.video.sampling import SamplingConfig, SamplingError, plan_sampling, plan_sequence

# Test hook, read by workers: "hang=<glob>;crash=<glob>;sleep=<seconds>" (globs match keys).
TEST_HOOK_ENV = "VIDEORFT_EXTRACT_TEST_HOOK"


def worker_init(decode_threads: int) -> None:
    """Share the CPUs between workers; die with the parent (Linux), so a killed stage
    leaves no decoder running."""
    decode.DECODE_THREADS = decode_threads
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _test_hook(key: str) -> None:
    """Simulate hung, crashing or slow decoders in tests (see TEST_HOOK_ENV)."""
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec:
        return
    for part in spec.split(";"):
        action, _, arg = part.partition("=")
        if action == "hang" and fnmatch.fnmatchcase(key, arg):
            time.sleep(1e6)
        elif action == "crash" and fnmatch.fnmatchcase(key, arg):
            os._exit(3)
        elif action == "sleep":
            time.sleep(float(arg))


def _npy_bytes(frames: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
    return buffer.getvalue()


def _read_video(path: Path, indices: list[int], size: tuple[int, int], backend: str) -> np.ndarray:
    if backend == "decord":
        return read_frames_decord(path, indices, size)
    return read_frames_pyav(path, indices, size)


def _video_meta(item: ExtractionItem, path: Path, cfg: SamplingConfig, backend: str
                ) -> tuple[dict[str, Any], np.ndarray]:
    info = probe(path)
    total = info.total_frames
    plan = plan_sampling(total, info.fps, info.height, info.width, cfg, item.nframes)
    size = (plan.height, plan.width)
    try:
        frames = _read_video(path, plan.indices, size, backend)
    except ShortVideoError as exc:
        # Containers without a frame count give duration * fps, which can be a frame or
        # two over; re-plan with the real count. A file really missing frames stays bad.
        if info.frames_exact or exc.available < 1 or exc.available < 0.9 * total:
            raise
        total = exc.available
        plan = plan_sampling(total, info.fps, info.height, info.width, cfg, item.nframes)
        size = (plan.height, plan.width)
        frames = _read_video(path, plan.indices, size, backend)
    meta = {
        "video": item.video,
        "frames": None,
        "requested_nframes": item.nframes,
        "nframes": len(plan.indices),
        "indices": plan.indices,
        "timestamps": plan.timestamps,
        "sample_fps": plan.sample_fps,
        "video_fps": info.fps,
        "duration": info.duration,
        "total_frames": total,
        "codec": info.codec,
        "orig_height": info.height,
        "orig_width": info.width,
        "height": plan.height,
        "width": plan.width,
        "backend": backend,
        "source_bytes": path.stat().st_size,
        "source_sha256": sha256_file(path),
    }
    return meta, frames


def _sequence_meta(item: ExtractionItem, paths: list[Path], cfg: SamplingConfig
                   ) -> tuple[dict[str, Any], np.ndarray]:
    assert item.frame_times is not None
    height, width = image_size(paths[0])
    plan = plan_sequence(item.frame_times, height, width, cfg)
    frames = read_image_frames([paths[i] for i in plan.indices], (plan.height, plan.width))
    digest = hashlib.sha256()
    for p in paths:
        digest.update(sha256_file(p).encode("ascii"))
    times = list(item.frame_times)
    spacing = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0
    meta = {
        "video": None,
        "frames": list(item.frames or ()),
        "requested_nframes": item.nframes,
        "nframes": len(plan.indices),
        "indices": plan.indices,
        "timestamps": plan.timestamps,
        "sample_fps": plan.sample_fps,
        "video_fps": plan.sample_fps,
        # From the first listed frame to one spacing past the last.
        "duration": times[-1] - times[0] + spacing,
        "total_frames": len(paths),
        "codec": None,
        "orig_height": height,
        "orig_width": width,
        "height": plan.height,
        "width": plan.width,
        "backend": IMAGES_BACKEND,
        "source_bytes": sum(p.stat().st_size for p in paths),
        "source_sha256": digest.hexdigest(),
    }
    return meta, frames


def _relative(message: str, raw_root: str) -> str:
    """Strip the data root from messages: reports must not depend on where the data lives."""
    for root in sorted({str(Path(raw_root).resolve()), str(Path(raw_root).absolute())},
                       key=len, reverse=True):
        message = message.replace(root.rstrip("/") + "/", "")
    return message


def extract_one(
    item: ExtractionItem, raw_root: str, items_dir: str, cfg_dict: dict[str, Any], backend: str
) -> dict[str, Any]:
    """Worker: sample one item and write it. Returns {"meta": ...} or {"error": reason}.

    Plain, picklable arguments (strings, a dict): they cross a process boundary, to a pool
    process or through a pipe to a Dask worker's decoder child.
    """
    _test_hook(item.key)
    cfg = SamplingConfig(**cfg_dict)
    try:
        if item.video is not None:
            path = safe_join(raw_root, item.video)
            meta, frames = _video_meta(item, path, cfg, backend)
        else:
            paths = [safe_join(raw_root, f) for f in item.frames or ()]
            meta, frames = _sequence_meta(item, paths, cfg)
    except (VideoDecodeError, SamplingError, DataValidationError) as exc:
        return {"error": _relative(str(exc), raw_root)}
    expected = (meta["nframes"], meta["height"], meta["width"], 3)
    if frames.shape != expected:
        return {"error": f"{item.source}: decoded {frames.shape}, expected {expected}"}
    data = _npy_bytes(frames)
    name = f"{item.key}.npy"
    meta.update(key=item.key, file=name, npy_bytes=len(data), sha256=sha256_bytes(data))
    out = Path(items_dir)
    atomic_write_bytes(out / name, data)  # the .npy first: the .json marks the item done
    atomic_write_json(out / f"{item.key}.json", meta)
    return {"meta": meta}
