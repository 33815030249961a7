"""The frame store: layout, reuse, crash safety, quarantine, pruning."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videorft.errors import StageError
from videorft.params import ExtractFramesParams
from videorft.video.extract import (
    TEST_HOOK_ENV,
    extract_frames,
    frame_key,
    items_from_records,
)
from videorft.video.sampling import SamplingConfig, plan_sampling, plan_sequence
from videorft.video.store import FrameStore

W, H, BITS = 64, 48, 8
PARAMS = ExtractFramesParams(workers=2, timeout_s=60, max_quarantine_fraction=0.5)
CFG = SamplingConfig.from_params(PARAMS)
N_CLIPS = 10


def code_frame(index: int) -> np.ndarray:
    """Frame `index` as black/white bars, one per bit (see test_decode)."""
    image = np.zeros((H, W, 3), np.uint8)
    bar = W // BITS
    for b in range(BITS):
        if (index >> b) & 1:
            image[:, b * bar:(b + 1) * bar] = 255
    return image


def read_code(frame: np.ndarray) -> int:
    width = frame.shape[1]
    bar = width / BITS
    return sum(1 << b for b in range(BITS)
               if frame[:, int(b * bar + bar / 4):int((b + 1) * bar - bar / 4)].mean() > 127)


def make_video(path: Path, frames: int, fps: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(code_frame(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("library")
    for i in range(N_CLIPS):
        make_video(root / "videos" / f"clip{i:02d}.mp4", 20 + 7 * i)
    seq = root / "got10k" / "GOT-10k_Train_000001"
    seq.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(code_frame(i)).save(seq / f"{i + 1:08d}.jpg", quality=95)
    return root


@pytest.fixture
def raw(tmp_path, library) -> Path:
    """A private copy of the library (tests break files in it)."""
    return Path(shutil.copytree(library, tmp_path / "raw"))


def video_records(count: int = N_CLIPS) -> list[dict]:
    return [{"id": f"clips/{i}", "video": f"videos/clip{i:02d}.mp4", "nframes": None}
            for i in range(count)]


def sequence_record() -> dict:
    frames = [f"got10k/GOT-10k_Train_000001/{i + 1:08d}.jpg" for i in range(5)]
    return {"id": "got/1", "video": None, "frames": frames,
            "frame_times": [i / 10 for i in range(5)], "nframes": None}


def run(records: list[dict], raw: Path, store: Path, **changes):
    params = PARAMS.model_copy(update=changes)
    items = items_from_records(records, SamplingConfig.from_params(params))
    return extract_frames(items, raw, store, params, progress=False)


def snapshot(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file()}


def test_keys_and_items():
    a = {"id": "a", "video": "v/x y.mp4", "nframes": None}
    b = {"id": "b", "video": "v/x y.mp4", "nframes": None, "task": "mcq"}
    c = {"id": "c", "video": "v/x y.mp4", "nframes": 8}
    assert frame_key(a, CFG) == frame_key(b, CFG)
    assert frame_key(a, CFG).startswith("x_y-") and len(frame_key(a, CFG)) == len("x_y-") + 12
    assert frame_key(c, CFG) != frame_key(a, CFG)
    assert frame_key(a, SamplingConfig(fps=1.0)) != frame_key(a, CFG)
    assert frame_key(sequence_record(), CFG).startswith("GOT-10k_Train_000001-")
    items = items_from_records([c, b, a, sequence_record()], CFG)
    assert [it.key for it in items] == sorted(it.key for it in items)
    assert len(items) == 3
    shared = next(it for it in items if it.key == frame_key(a, CFG))
    assert shared.record_ids == ("a", "b") and shared.video == "v/x y.mp4"
    seq = next(it for it in items if it.frames)
    assert seq.frame_times == (0.0, 0.1, 0.2, 0.3, 0.4) and seq.video is None


def test_store_layout_and_manifest(raw, tmp_path):
    store = tmp_path / "store"
    records = [*video_records(3), {"id": "track", "video": "videos/clip02.mp4", "nframes": 8},
               sequence_record()]
    report = run(records, raw, store)
    assert (report.total, report.extracted, report.reused, report.quarantined) == (5, 5, 0, 0)

    items = items_from_records(records, CFG)
    files = sorted(p.name for p in (store / "items").iterdir())
    assert files == sorted([f"{it.key}.npy" for it in items] + [f"{it.key}.json" for it in items])
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["sampling"] == CFG.as_dict() and manifest["backend"] == "pyav"
    assert sorted(manifest["items"]) == [it.key for it in items]
    assert json.loads((store / "quarantine.json").read_text()) == []
    for name in ("manifest.json", "quarantine.json"):
        assert str(tmp_path) not in (store / name).read_text(), "no absolute paths"

    fs = FrameStore(store)
    assert fs.keys() == [it.key for it in items] and len(fs) == 5
    for item in items:
        meta = fs.meta(item.key)
        assert meta == json.loads((store / "items" / f"{item.key}.json").read_text())
        frames = fs.load(item.key)
        assert isinstance(frames, np.memmap) and frames.dtype == np.uint8
        assert frames.shape == (meta["nframes"], meta["height"], meta["width"], 3)
        assert fs.verify(item.key)
        if item.video is not None:
            total = 20 + 7 * int(item.video[-6:-4])
            plan = plan_sampling(total, 10.0, H, W, CFG, item.nframes)
            assert meta["indices"] == plan.indices and meta["total_frames"] == total
            assert (meta["height"], meta["width"]) == (plan.height, plan.width)
            assert meta["timestamps"] == plan.timestamps
            assert meta["sample_fps"] == plan.sample_fps and meta["video_fps"] == 10.0
            assert meta["duration"] == pytest.approx(total / 10)
            assert [read_code(f) for f in frames] == plan.indices
            assert meta["video"] == item.video and meta["frames"] is None
        else:
            plan = plan_sequence([i / 10 for i in range(5)], H, W, CFG)
            assert meta["nframes"] == 6 and meta["indices"] == [0, 1, 2, 3, 4, 4]
            assert meta["timestamps"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.4]
            assert (meta["height"], meta["width"]) == (plan.height, plan.width)
            assert meta["backend"] == "images" and meta["sample_fps"] == pytest.approx(10)
            assert [read_code(f) for f in frames] == [0, 1, 2, 3, 4, 4]
        assert meta["key"] == item.key and meta["file"] == f"{item.key}.npy"
        assert (meta["orig_height"], meta["orig_width"]) == (H, W)
    assert "track" in next(it for it in items if it.nframes == 8).record_ids
    assert fs.meta(next(it.key for it in items if it.nframes == 8))["nframes"] == 8
    with pytest.raises(KeyError, match="not in the frame store"):
        fs.meta("nope")


def test_rerun_reuses_everything_without_rewriting(raw, tmp_path):
    store = tmp_path / "store"
    records = [*video_records(4), sequence_record()]
    run(records, raw, store)
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    time.sleep(0.05)
    report = run(records, raw, store)
    assert (report.extracted, report.reused) == (0, 5)
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == before


def test_incomplete_items_are_redone(raw, tmp_path):
    clean, store = tmp_path / "clean", tmp_path / "store"
    records = video_records(4)
    run(records, raw, clean)
    run(records, raw, store)
    keys = [it.key for it in items_from_records(records, CFG)]
    items = store / "items"
    (items / f"{keys[0]}.json").unlink()  # killed between the .npy and the .json
    npy = items / f"{keys[1]}.npy"
    npy.write_bytes(npy.read_bytes()[:-10])  # a .npy that does not match its meta
    (items / f"{keys[2]}.npy").unlink()
    (items / f".{keys[3]}.npy.abc123.tmp").write_bytes(b"half")  # a killed write
    (store / ".manifest.json.xyz.tmp").write_text("{")
    report = run(records, raw, store)
    assert (report.extracted, report.reused) == (3, 1)
    assert snapshot(store) == snapshot(clean)


def test_verify_rehashes(raw, tmp_path):
    store = tmp_path / "store"
    records = video_records(2)
    run(records, raw, store)
    key = items_from_records(records, CFG)[0].key
    npy = store / "items" / f"{key}.npy"
    data = bytearray(npy.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only a hash notices
    npy.write_bytes(bytes(data))
    assert not FrameStore(store).verify(key)
    assert run(records, raw, store).extracted == 0
    items = items_from_records(records, CFG)
    report = extract_frames(items, raw, store, PARAMS, progress=False, verify=True)
    assert (report.extracted, report.reused) == (1, 1)
    assert FrameStore(store).verify(key)


KILL_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from videorft.params import ExtractFramesParams
    from videorft.video.extract import extract_frames, items_from_records
    from videorft.video.sampling import SamplingConfig

    if __name__ == "__main__":
        raw, store, records = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
        params = ExtractFramesParams(workers=2, timeout_s=60, max_quarantine_fraction=0.5)
        items = items_from_records(records, SamplingConfig.from_params(params))
        extract_frames(items, raw, store, params, progress=False)
""")


def test_killed_run_then_rerun_is_byte_identical(raw, tmp_path):
    records = [*video_records(), sequence_record()]
    store, clean = tmp_path / "store", tmp_path / "clean"
    script = tmp_path / "extract.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, TEST_HOOK_ENV: "sleep=0.3"}  # slow items: a window to kill in
    proc = subprocess.Popen(
        [sys.executable, str(script), str(raw), str(store), json.dumps(records)],
        env=env, start_new_session=True, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    done: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        done = list((store / "items").glob("*.json")) if (store / "items").exists() else []
        if done:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"extraction ended before it could be killed: {proc.stderr}"
    os.killpg(proc.pid, signal.SIGKILL)  # the stage and its workers, as a CI cancel would
    proc.wait()
    finished = len(list((store / "items").glob("*.json")))
    assert 1 <= finished < len(records)
    assert not (store / "manifest.json").exists()

    report = run(records, raw, store)
    assert report.reused == finished and report.extracted == len(records) - finished
    run(records, raw, clean)
    assert snapshot(store) == snapshot(clean)
    assert not list(store.rglob("*.tmp"))


def test_bad_videos_are_quarantined_with_reasons(raw, tmp_path, monkeypatch):
    good = (raw / "videos" / "clip00.mp4").read_bytes()
    (raw / "videos" / "empty.mp4").write_bytes(b"")
    (raw / "videos" / "garbage.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    (raw / "videos" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[:64] = bytes(64)  # the container header zeroed
    (raw / "videos" / "corrupt.mp4").write_bytes(bytes(corrupt))
    bad = {name: {"id": f"bad/{name}", "video": f"videos/{name}.mp4", "nframes": None}
           for name in ("empty", "garbage", "truncated", "corrupt", "missing")}
    records = [*video_records(), *bad.values(),
               {"id": "too-few", "video": "videos/clip00.mp4", "nframes": 64}]
    keys = {it.video: it.key for it in items_from_records(records, CFG)}
    hang, crash = keys["videos/clip03.mp4"], keys["videos/clip04.mp4"]
    monkeypatch.setenv(TEST_HOOK_ENV, f"hang={hang};crash={crash}")
    store = tmp_path / "store"

    report = run(records, raw, store, timeout_s=3)
    reasons = {q["key"]: q["reason"] for q in report.quarantine}
    by_video = {q["video"]: q for q in report.quarantine}
    assert report.quarantined == 8 and report.extracted == len(records) - 8
    assert "videos/empty.mp4: empty file (0 bytes)" in by_video["videos/empty.mp4"]["reason"]
    assert "videos/missing.mp4: file not found" in by_video["videos/missing.mp4"]["reason"]
    for name in ("garbage", "truncated", "corrupt"):
        assert f"videos/{name}.mp4: cannot open as a video" in by_video[f"videos/{name}.mp4"][
            "reason"]
    assert reasons[hang] == "videos/clip03.mp4: timed out after 3 s (decoder hung or video too " \
                            "slow); worker killed"
    assert "videos/clip04.mp4: decoder process died" in reasons[crash]
    too_few = next(q for q in report.quarantine if q["record_ids"] == ["too-few"])
    assert "64" in too_few["reason"] and "20 frames" in too_few["reason"]
    assert by_video["videos/missing.mp4"]["record_ids"] == ["bad/missing"]

    on_disk = json.loads((store / "quarantine.json").read_text())
    assert on_disk == sorted(report.quarantine, key=lambda q: q["key"])
    assert str(tmp_path) not in (store / "quarantine.json").read_text()
    manifest = json.loads((store / "manifest.json").read_text())
    assert set(manifest["items"]).isdisjoint(reasons)
    assert not any(p.stem in reasons for p in (store / "items").iterdir())
    assert not list(store.rglob("*.tmp"))

    # Quarantine is recomputed: fixed files and a healthy decoder succeed on the next run.
    monkeypatch.delenv(TEST_HOOK_ENV)
    (raw / "videos" / "missing.mp4").write_bytes(good)
    report = run(records, raw, store)
    assert report.extracted == 3 and report.quarantined == 5
    assert hang in FrameStore(store) and crash in FrameStore(store)
    assert keys["videos/missing.mp4"] in FrameStore(store)


def test_too_many_bad_videos_fail_the_stage(raw, tmp_path):
    records = [*video_records(3),
               {"id": "x", "video": "videos/nope1.mp4"}, {"id": "y", "video": "videos/nope2.mp4"}]
    store = tmp_path / "store"
    with pytest.raises(StageError) as info:
        run(records, raw, store, max_quarantine_fraction=0.25)
    message = str(info.value)
    assert "2 of 5 videos quarantined" in message and "max_quarantine_fraction=0.25" in message
    assert "videos/nope1.mp4: file not found" in message
    assert len(json.loads((store / "quarantine.json").read_text())) == 2
    # At the threshold exactly, the stage passes.
    report = run(records, raw, store, max_quarantine_fraction=0.4)
    assert report.quarantined == 2 and report.reused == 3


def test_stale_items_are_pruned(raw, tmp_path):
    store = tmp_path / "store"
    run([*video_records(4), sequence_record()], raw, store)
    keep = video_records(2)
    report = run(keep, raw, store)
    assert report.reused == 2
    kept = {it.key for it in items_from_records(keep, CFG)}
    assert {p.stem for p in (store / "items").iterdir()} == kept
    assert FrameStore(store).keys() == sorted(kept)
    clean = tmp_path / "clean"
    run(keep, raw, clean)
    assert snapshot(store) == snapshot(clean)


def test_changed_source_is_redone(raw, tmp_path):
    store = tmp_path / "store"
    records = video_records(2)
    run(records, raw, store)
    make_video(raw / "videos" / "clip01.mp4", 50)  # same path, new content
    report = run(records, raw, store)
    assert (report.extracted, report.reused) == (1, 1)
    key = items_from_records(records, CFG)[1].key
    assert FrameStore(store).meta(key)["total_frames"] == 50


def test_decord_backend(raw, tmp_path):
    pytest.importorskip("decord")
    store = tmp_path / "store"
    records = video_records(3)
    run(records, raw, store)
    report = run(records, raw, store, backend="decord")
    assert report.extracted == 3, "a backend change redoes the items"
    fs = FrameStore(store)
    for key in fs:
        meta = fs.meta(key)
        assert meta["backend"] == "decord"
        assert [read_code(f) for f in fs.load(key)] == meta["indices"]


def test_unsafe_paths_are_quarantined(raw, tmp_path):
    outside = tmp_path / "outside.mp4"
    make_video(outside, 20)
    (raw / "videos" / "link.mp4").symlink_to(outside)
    records = [*video_records(2), {"id": "l", "video": "videos/link.mp4"}]
    report = run(records, raw, tmp_path / "store", max_quarantine_fraction=0.5)
    assert report.quarantined == 1
    assert "outside the data root" in report.quarantine[0]["reason"]


def test_ntsc_timestamps(tmp_path):
    raw = tmp_path / "raw"
    path = raw / "ntsc.mp4"
    path.parent.mkdir()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(90):
            for packet in stream.encode(av.VideoFrame.from_ndarray(code_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    run([{"id": "n", "video": "ntsc.mp4"}], raw, tmp_path / "store")
    fs = FrameStore(tmp_path / "store")
    meta = fs.meta(fs.keys()[0])
    assert meta["video_fps"] == pytest.approx(29.97, abs=1e-3)
    assert meta["timestamps"] == [i / meta["video_fps"] for i in meta["indices"]]
    assert [read_code(f) for f in fs.load(fs.keys()[0])] == meta["indices"]
