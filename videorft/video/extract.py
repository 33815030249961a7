"""The frame store: every video sampled once, Qwen-style, and kept as uint8 arrays.

Training reads frames from here instead of decoding videos in the data loader, so each
video's sampled frames exist exactly once and are the same in every epoch and on every rank.

Layout under ``store_dir``::

    items/<key>.npy     uint8 [T, H, W, 3]: the sampled frames, already resized
    items/<key>.json    the item's meta (see ``_video_meta``); names its .npy, size and sha256
    manifest.json       {"sampling": ..., "backend": ..., "items": {key: meta}} (sorted)
    quarantine.json     [{key, video, frames, reason, record_ids}] (sorted by key)

An item is done iff its .json exists, names its .npy, and the .npy has the recorded size
(and, with ``verify=True``, the recorded sha256); the source file must also still have the
size it had. Writes are .npy first, then .json, each to a temp file renamed into place, so a
killed run never leaves a half item that counts as done, and a re-run redoes only what is
missing. Nothing in the files depends on time, machine or run order, so an interrupted run
plus a re-run gives the same bytes as one clean run.

Items are extracted by a local process pool (``executor: local``) or by the workers of a Dask
cluster (``executor: dask``, see docs/dask.md); both run the same ``_extract_one`` with the
same timeout and quarantine rules, so the store is the same bytes either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import hashlib
import io
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from pebble import ProcessExpired, ProcessPool
from tqdm import tqdm

from videorft.errors import DataValidationError, StageError, VideoDecodeError
from videorft.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    dumps_canonical,
    read_json,
    safe_join,
    sha256_bytes,
    sha256_file,
)
from videorft.video import decode
from videorft.video.decode import (
    ShortVideoError,
    image_size,
    probe,
    read_frames_decord,
    read_frames_pyav,
    read_image_frames,
)
from videorft.video.sampling import SamplingConfig, SamplingError, plan_sampling, plan_sequence
from videorft.video.store import ITEMS_DIR, MANIFEST, QUARANTINE

if TYPE_CHECKING:
    from videorft.params import ExtractFramesParams

IMAGES_BACKEND = "images"  # frame sequences are read with PIL whatever the video backend
MAX_REASONS_IN_ERROR = 5
# Test hook, read by workers: "hang=<glob>;crash=<glob>;sleep=<seconds>" (globs match keys).
TEST_HOOK_ENV = "VIDEORFT_EXTRACT_TEST_HOOK"
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


@dataclass
class ExtractionReport:
    total: int
    extracted: int
    reused: int
    quarantined: int
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "extracted": self.extracted,
            "reused": self.reused,
            "quarantined": self.quarantined,
            "quarantine": self.quarantine,
        }


# --------------------------------------------------------------------------- keys and items


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


# --------------------------------------------------------------------------- worker side


def _worker_init(decode_threads: int) -> None:
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


def _extract_one(
    item: ExtractionItem, raw_root: str, items_dir: str, cfg_dict: dict[str, Any], backend: str
) -> dict[str, Any]:
    """Worker: sample one item and write it. Returns {"meta": ...} or {"error": reason}."""
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


# --------------------------------------------------------------------------- parent side


def _backend_for(item: ExtractionItem, backend: str) -> str:
    return backend if item.video is not None else IMAGES_BACKEND


def _source_bytes(item: ExtractionItem, raw_root: Path) -> int | None:
    try:
        if item.video is not None:
            return safe_join(raw_root, item.video).stat().st_size
        return sum(safe_join(raw_root, f).stat().st_size for f in item.frames or ())
    except (OSError, DataValidationError):
        return None


def _done_meta(
    item: ExtractionItem, raw_root: Path, items_dir: Path, backend: str, verify: bool
) -> dict[str, Any] | None:
    """The item's meta if it is complete and still matches its source, else None."""
    json_path = items_dir / f"{item.key}.json"
    if not json_path.is_file():
        return None
    try:
        meta = read_json(json_path)
    except DataValidationError:
        return None
    if not isinstance(meta, dict) or meta.get("key") != item.key:
        return None
    npy = items_dir / f"{item.key}.npy"
    if (
        meta.get("file") != npy.name
        or meta.get("backend") != _backend_for(item, backend)
        or not npy.is_file()
        or npy.stat().st_size != meta.get("npy_bytes")
        or _source_bytes(item, raw_root) != meta.get("source_bytes")
    ):
        return None
    if verify and sha256_file(npy) != meta.get("sha256"):
        return None
    return meta


def _remove_temp_files(*folders: Path) -> None:
    """Temp files of writes that were killed (io.atomic_open names them .<name>.<rand>.tmp)."""
    for folder in folders:
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _write_json_if_changed(path: Path, obj: Any) -> None:
    """Like io.atomic_write_json, but leaves an identical file untouched (mtime and all)."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return
    atomic_write_text(path, text)


def _prune(items_dir: Path, keep: set[str]) -> None:
    for path in sorted(items_dir.iterdir()):
        if path.suffix in (".npy", ".json") and path.stem not in keep:
            path.unlink(missing_ok=True)


def _quarantine_entry(item: ExtractionItem, reason: str) -> dict[str, Any]:
    return {
        "key": item.key,
        "video": item.video,
        "frames": list(item.frames) if item.frames is not None else None,
        "reason": reason,
        "record_ids": list(item.record_ids),
    }


# The same words whichever executor ran the item: the quarantine report must not depend on it.
def _timeout_reason(item: ExtractionItem, timeout_s: float) -> str:
    return f"{item.source}: timed out after {timeout_s:g} s (decoder hung or video too slow); " \
           "worker killed"


def _died_reason(item: ExtractionItem, exitcode: int | None) -> str:
    return f"{item.source}: decoder process died (exit code {exitcode})"


def _unexpected_reason(item: ExtractionItem, exc: BaseException) -> str:
    return f"{item.source}: unexpected {type(exc).__name__}: {exc}"


def _run_pool(
    todo: list[ExtractionItem],
    raw_root: Path,
    items_dir: Path,
    cfg: SamplingConfig,
    params: ExtractFramesParams,
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Extract ``todo`` in worker processes; returns (metas by key, failure reasons by key)."""
    metas: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    if not todo:
        return metas, failures
    workers = min(params.workers, len(todo))
    pool = ProcessPool(
        max_workers=workers,
        initializer=_worker_init,
        initargs=(max(1, decode.DECODE_THREADS // workers),),
        context=multiprocessing.get_context("spawn"),  # never fork a threaded parent
    )
    try:
        futures = {
            pool.schedule(
                _extract_one,
                args=(item, str(raw_root), str(items_dir), cfg.as_dict(), params.backend),
                timeout=params.timeout_s,
            ): item
            for item in todo
        }
        with tqdm(total=len(todo), desc="extract_frames", unit="video", disable=not progress
                  ) as bar:
            for future in as_completed(futures):
                item = futures[future]
                try:
                    result = future.result()
                except FutureTimeoutError:
                    result = {"error": _timeout_reason(item, params.timeout_s)}
                except BrokenProcessPool as exc:
                    raise StageError(
                        f"extract_frames: the worker processes died or could not start ({exc}). "
                        "Workers are spawned: a script that calls extract_frames must guard "
                        "its entry point with `if __name__ == '__main__':`."
                    ) from exc
                except ProcessExpired as exc:
                    result = {"error": _died_reason(item, exc.exitcode)}
                except Exception as exc:  # a bug or an unexpected library error: keep going
                    result = {"error": _unexpected_reason(item, exc)}
                if "meta" in result:
                    metas[item.key] = result["meta"]
                else:
                    failures[item.key] = result["error"]
                bar.update(1)
        pool.close()
    except BaseException:
        pool.stop()
        raise
    finally:
        pool.join()
    return metas, failures


# --------------------------------------------------------------------------- dask executor
#
# extract_frames.executor = dask fans the items out over a Dask cluster: one task per item.
# Workers read the videos and write the items themselves, so they must see the data and the
# frame store at the same paths as the stage (a local cluster does; a remote one needs the
# project on shared storage); every task checks this first. Dask cannot stop a running task,
# so the decode never runs in the worker: each worker thread hands its items to a decoder
# child process (``_Decoder``), which is killed when an item passes ``timeout_s``. The child
# runs the very ``_extract_one`` of the local pool, so the files are the same bytes.

# Connecting to ``dask_address`` gives up after this long (module attribute: tests lower it).
DASK_CONNECT_TIMEOUT_S = 30.0
# A decoder child must be ready (imports done) within this; its start is not item time.
DECODER_START_TIMEOUT_S = 120.0
# A decoder child left idle this long exits: a cluster keeps no decoders after a stage.
DECODER_IDLE_EXIT_S = 600.0
_PROBE_PREFIX = ".dask-probe."  # a .*.tmp name: _remove_temp_files sweeps a leftover one
_DECODER_MAIN = "import sys; from videorft.video.extract import _decoder_main; " \
                "_decoder_main(sys.argv[1:])"


def _decoder_main(argv: list[str]) -> None:
    """Decoder child: ``_extract_one`` for each request until EOF or idle timeout."""
    requests = Connection(int(argv[0]), writable=False)
    replies = Connection(int(argv[1]), readable=False)
    _worker_init(int(argv[2]))
    replies.send("ready")
    while requests.poll(DECODER_IDLE_EXIT_S):
        try:
            args = requests.recv()
        except EOFError:  # the worker closed us (or died)
            return
        try:
            result = _extract_one(*args)
        except Exception as exc:  # as the pool reports an exception raised in its worker
            result = {"error": _unexpected_reason(args[0], exc)}
        replies.send(result)


class _Decoder:
    """A child process that runs ``_extract_one`` for one Dask worker thread.

    Reused across items (its start, mostly imports, takes a second or two); killed when an
    item passes the timeout, and started afresh for the next one. A plain subprocess rather
    than multiprocessing: Dask worker processes are daemonic and may not have those.
    """

    def __init__(self, decode_threads: int):
        self.decode_threads = decode_threads
        self.lock = threading.Lock()  # held while an item runs (see _close_idle_decoders)
        self.proc: subprocess.Popen | None = None
        self.requests: Connection | None = None
        self.replies: Connection | None = None
        self.last_used = 0.0

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        self.requests = Connection(req_w, readable=False)
        self.replies = Connection(rep_r, writable=False)
        # The worker imported videorft; make sure the child finds the same one.
        package_parent = str(Path(__file__).resolve().parents[2])
        pythonpath = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _DECODER_MAIN, str(req_r), str(rep_w),
                 str(self.decode_threads)],
                pass_fds=(req_r, rep_w),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": pythonpath},
            )
        except BaseException:
            self.close()
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        ready = self.replies.poll(DECODER_START_TIMEOUT_S)
        try:
            if ready and self.replies.recv() == "ready":
                return
        except EOFError:
            pass
        code = self.close(kill=True)
        raise RuntimeError(
            f"could not start a decoder process ({sys.executable}) on this Dask worker: "
            + (f"it exited with code {code}" if ready else
               f"not ready after {DECODER_START_TIMEOUT_S:g} s")
            + "; see the worker's log"
        )

    def run(self, args: tuple, item: ExtractionItem, timeout_s: float) -> dict[str, Any]:
        """``_extract_one(*args)`` in the child: its result, or the timeout/death reason."""
        stale = time.monotonic() - self.last_used > DECODER_IDLE_EXIT_S / 2  # may be exiting
        if self.proc is None or self.proc.poll() is not None or stale:
            self.close()
            self._start()
        assert self.requests is not None and self.replies is not None
        try:
            self.requests.send(args)
            if not self.replies.poll(timeout_s):
                self.close(kill=True)
                return {"error": _timeout_reason(item, timeout_s)}
            return self.replies.recv()
        except (EOFError, OSError):  # the child died during the item
            code = self.close(kill=True)
            return {"error": _died_reason(item, code)}
        finally:
            self.last_used = time.monotonic()

    def close(self, kill: bool = False) -> int | None:
        """Stop the child (an idle one exits on EOF; ``kill`` for a busy one); its exit code."""
        for conn in (self.requests, self.replies):
            if conn is not None:
                conn.close()
        self.requests = self.replies = None
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if kill and proc.poll() is None:
            proc.kill()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


_DECODERS: dict[int, _Decoder] = {}  # by worker thread id
_DECODERS_LOCK = threading.Lock()


@contextlib.contextmanager
def _thread_decoder(decode_threads: int) -> Iterator[_Decoder]:
    """This thread's decoder, held (locked) for one item."""
    with _DECODERS_LOCK:
        ident = threading.get_ident()
        decoder = _DECODERS.get(ident)
        if decoder is None or decoder.decode_threads != decode_threads:
            if decoder is not None:
                decoder.close()
            decoder = _DECODERS[ident] = _Decoder(decode_threads)
        decoder.lock.acquire()  # only _close_idle_decoders contends, and never waits
    try:
        yield decoder
    finally:
        decoder.lock.release()


def _close_idle_decoders() -> int:
    """Run on every worker after a stage: stop the decoders not busy with an item (another
    stage may share the cluster). Returns how many are left running."""
    with _DECODERS_LOCK:
        for ident, decoder in list(_DECODERS.items()):
            if decoder.lock.acquire(blocking=False):
                try:
                    decoder.close()
                    del _DECODERS[ident]
                finally:
                    decoder.lock.release()
        return len(_DECODERS)


def _worker_problem(raw_root: str, items_dir: str, probe: str) -> str | None:
    """Why this worker cannot work for the stage (it does not share its files), or None."""
    from distributed import get_worker

    where = f"Dask worker {get_worker().address}"
    hint = ("Dask workers read the videos and write the frame store themselves: run them where "
            "the project is at the same path (shared storage), or set "
            "extract_frames.dask_address: null for a local cluster")
    if not Path(raw_root).is_dir():
        return f"extract_frames: {where} cannot see the data folder {raw_root}. {hint}"
    if not Path(probe).is_file():
        return f"extract_frames: {where} does not see the stage's frame store {items_dir}. {hint}"
    if not os.access(items_dir, os.W_OK | os.X_OK):
        return f"extract_frames: {where} cannot write to the frame store {items_dir}"
    return None


def _dask_extract(
    item: ExtractionItem,
    raw_root: str,
    items_dir: str,
    probe: str,
    cfg_dict: dict[str, Any],
    backend: str,
    timeout_s: float,
) -> dict[str, Any]:
    """Dask task: one item through this thread's decoder. Item outcomes (meta or quarantine
    reason) are returned; a raised exception means the worker cannot work (fails the stage)."""
    from distributed import get_worker

    problem = _worker_problem(raw_root, items_dir, probe)
    if problem:
        raise StageError(problem)
    # Share the worker's CPUs between its threads, as the pool shares them between processes.
    threads = max(1, decode.DECODE_THREADS // max(1, get_worker().state.nthreads))
    with _thread_decoder(threads) as decoder:
        return decoder.run((item, raw_root, items_dir, cfg_dict, backend), item, timeout_s)


def _check_scheduler(address: str) -> None:
    """Fail fast and clearly when ``dask_address`` cannot be reached (a bare Client would
    wait, then leave a half-made client that hangs again when collected)."""
    import asyncio

    from distributed.comm import connect
    from distributed.security import Security

    async def probe() -> None:
        # TLS settings come from the Dask config, as they do for the Client.
        comm = await connect(address, timeout=DASK_CONNECT_TIMEOUT_S,
                             **Security().get_connection_args("client"))
        await comm.close()

    try:
        with ThreadPoolExecutor(1) as pool:  # its own event loop, whatever the caller runs
            pool.submit(asyncio.run, probe()).result()
    except Exception as exc:
        raise StageError(
            f"extract_frames: cannot reach the Dask scheduler at {address!r} "
            f"(extract_frames.dask_address): {type(exc).__name__}: {exc}. Start the cluster "
            "first, or set extract_frames.dask_address: null for a local cluster."
        ) from exc


@contextlib.contextmanager
def _dask_client(params: ExtractFramesParams, tasks: int) -> Iterator[tuple[Any, str]]:
    """(client, a description of the cluster for messages)."""
    from distributed import Client, LocalCluster

    if params.dask_address is None:
        # In-process workers: the decoding already runs in child processes, and a killed
        # stage takes its workers and (by PR_SET_PDEATHSIG) their decoders with it.
        with (
            LocalCluster(n_workers=1, threads_per_worker=min(params.workers, tasks),
                         processes=False, dashboard_address=None) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            yield client, "a local Dask cluster"
        return
    _check_scheduler(params.dask_address)
    try:
        client = Client(params.dask_address, timeout=DASK_CONNECT_TIMEOUT_S,
                        set_as_default=False)
    except Exception as exc:
        raise StageError(f"extract_frames: cannot connect to the Dask scheduler at "
                         f"{params.dask_address!r}: {type(exc).__name__}: {exc}") from exc
    with client:
        yield client, f"the Dask cluster at {params.dask_address}"


def _run_dask(
    todo: list[ExtractionItem],
    raw_root: Path,
    items_dir: Path,
    cfg: SamplingConfig,
    params: ExtractFramesParams,
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Like ``_run_pool``, on a Dask cluster (see the comment above ``DASK_CONNECT_TIMEOUT_S``)."""
    metas: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    if not todo:
        return metas, failures
    from distributed import as_completed as dask_as_completed

    raw_root, items_dir = raw_root.absolute(), items_dir.absolute()  # workers' cwd differs
    run_id = uuid.uuid4().hex
    probe = items_dir / f"{_PROBE_PREFIX}{run_id}.tmp"
    probe.write_bytes(b"")
    try:
        with _dask_client(params, len(todo)) as (client, cluster):
            futures = {
                client.submit(
                    _dask_extract, item, str(raw_root), str(items_dir), str(probe),
                    cfg.as_dict(), params.backend, params.timeout_s,
                    key=f"extract_frames-{item.key}-{run_id}", pure=False,
                ): item
                for item in todo
            }
            try:
                with tqdm(total=len(todo), desc="extract_frames", unit="video",
                          disable=not progress) as bar:
                    for future in dask_as_completed(futures, loop=client.loop):
                        item = futures[future]
                        try:
                            result = future.result()
                        except StageError:
                            raise
                        except Exception as exc:
                            hint = (" (is videorft installed where the workers run?)"
                                    if isinstance(exc, ImportError) else "")
                            raise StageError(
                                f"extract_frames: the Dask task for {item.source} failed on "
                                f"{cluster}: {type(exc).__name__}: {exc}{hint}"
                            ) from exc
                        if "meta" in result:
                            metas[item.key] = result["meta"]
                        else:
                            failures[item.key] = result["error"]
                        bar.update(1)
            finally:
                client.cancel(list(futures))  # a no-op when all are done
                with contextlib.suppress(Exception):
                    client.run(_close_idle_decoders)
    finally:
        probe.unlink(missing_ok=True)
    return metas, failures


def extract_frames(
    items: Iterable[ExtractionItem],
    raw_root: Path,
    store_dir: Path,
    params: ExtractFramesParams,
    *,
    progress: bool = True,
    verify: bool = False,
) -> ExtractionReport:
    """Bring the store in line with ``items``: extract what is missing, reuse the rest.

    Bad videos are quarantined (listed in quarantine.json with a reason), not fatal, unless
    their share exceeds ``params.max_quarantine_fraction``: then StageError, and nothing is
    pruned so a fixed re-run keeps the work done. ``verify`` re-hashes existing .npy files
    instead of trusting their recorded size (a full read of the store).
    """
    items = sorted(items, key=lambda it: it.key)
    if len({it.key for it in items}) != len(items):
        raise ValueError("extraction items must have distinct keys")
    raw_root, store_dir = Path(raw_root), Path(store_dir)
    items_dir = store_dir / ITEMS_DIR
    items_dir.mkdir(parents=True, exist_ok=True)
    _remove_temp_files(items_dir, store_dir)
    cfg = SamplingConfig.from_params(params)

    metas: dict[str, dict[str, Any]] = {}
    todo: list[ExtractionItem] = []
    for item in items:
        meta = _done_meta(item, raw_root, items_dir, params.backend, verify)
        if meta is None:
            todo.append(item)
        else:
            metas[item.key] = meta
    reused = len(metas)
    runner = _run_dask if params.executor == "dask" else _run_pool
    new_metas, failures = runner(todo, raw_root, items_dir, cfg, params, progress)
    metas.update(new_metas)
    _remove_temp_files(items_dir, store_dir)  # left by workers killed on timeout

    by_key = {it.key: it for it in items}
    quarantine = [_quarantine_entry(by_key[key], failures[key]) for key in sorted(failures)]
    _write_json_if_changed(store_dir / QUARANTINE, quarantine)
    report = ExtractionReport(
        total=len(items),
        extracted=len(new_metas),
        reused=reused,
        quarantined=len(quarantine),
        quarantine=quarantine,
    )
    if items and len(quarantine) / len(items) > params.max_quarantine_fraction:
        reasons = "; ".join(q["reason"] for q in quarantine[:MAX_REASONS_IN_ERROR])
        more = len(quarantine) - MAX_REASONS_IN_ERROR
        raise StageError(
            f"extract_frames: {len(quarantine)} of {len(items)} videos quarantined "
            f"({len(quarantine) / len(items):.1%}), more than max_quarantine_fraction="
            f"{params.max_quarantine_fraction:g}; see {store_dir / QUARANTINE}. First reasons: "
            f"{reasons}" + (f" (and {more} more)" if more > 0 else "")
        )
    manifest = {
        "backend": params.backend,
        "sampling": cfg.as_dict(),
        "items": {key: metas[key] for key in sorted(metas)},
    }
    _write_json_if_changed(store_dir / MANIFEST, manifest)
    _prune(items_dir, set(metas))
    return report
