"""Decoders: the fast PyAV path must return exactly the frames of decode-everything.

Every test video shows its own frame number as a 12-bit bar code, so a frame read from the
wrong position is caught even where two frames would look alike.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from videorft.errors import VideoDecodeError
from videorft.video import decode
from videorft.video.decode import (
    INTERPOLATION,
    ShortVideoError,
    VideoInfo,
    decode_all_then_sample,
    probe,
    read_frames_decord,
    read_frames_pyav,
    read_image_frames,
)

BITS = 12
W, H = 96, 64


def code_frame(index: int, width: int = W, height: int = H) -> np.ndarray:
    """Frame `index` as black/white vertical bars (bit b of index in bar b), plus a ramp."""
    image = np.zeros((height, width, 3), np.uint8)
    bar = width // BITS
    for b in range(BITS):
        if (index >> b) & 1:
            image[:, b * bar:(b + 1) * bar] = 255
    image[: height // 8, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)
    return image


def read_code(frame: np.ndarray) -> int:
    """The frame number shown by a (possibly resized, lossy) code_frame."""
    height, width, _ = frame.shape
    bar = width / BITS
    rows = frame[height // 4:]
    value = 0
    for b in range(BITS):
        lo, hi = int(b * bar + bar / 4), int((b + 1) * bar - bar / 4)
        if rows[:, lo:max(hi, lo + 1)].mean() > 127:
            value |= 1 << b
    return value


def make_video(path: Path, frames: int, *, fps: int | Fraction = 30, options: dict | None = None,
               width: int = W, height: int = H, pts: list[int] | None = None,
               container_options: dict | None = None) -> Path:
    """Encode coded frames with libx264 (x264 defaults unless `options`: GOP 250, 3 B-frames)."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if options:
            stream.options = options
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(code_frame(i, width, height), format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = Fraction(1, int(fps))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_types(path: Path) -> list[str]:
    with av.open(str(path)) as container:
        return [PictureType(int(f.pict_type)).name for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        # x264 defaults: keyint 250, 3 B-frames with pyramid.
        "gop250": make_video(root / "gop250.mp4", 300),
        "gop12": make_video(root / "gop12.mp4", 200, options={"g": "12", "bf": "3"}),
        "gop5-noB": make_video(root / "gop5.mp4", 90, options={"g": "5", "bf": "0"}),
        "ntsc": make_video(root / "ntsc.mp4", 150, fps=Fraction(30000, 1001),
                           options={"g": "24"}),
        # Matroska stores no frame count: probe estimates it from the duration.
        "mkv": make_video(root / "clip.mkv", 120, options={"g": "30"}),
    }


def test_fixtures_have_b_frames_and_keyframes(videos):
    types = frame_types(videos["gop250"])
    assert types.count("B") > 50, "the default x264 video must contain B-frames"
    assert frame_types(videos["gop12"]).count("I") >= 200 // 12


def _index_sets(total: int) -> list[list[int]]:
    rng = np.random.default_rng(total)
    return [
        list(range(total)),
        [0, total - 1],
        list(range(0, total, 15)),
        list(range(0, total, 40)),
        sorted(rng.choice(total, 12, replace=False).tolist()),
        [total - 1, 3, 3, 50 % total],  # unsorted, repeated
        [1, 2],
        [0, 11, 12, 13, 24, 25, total // 2, total - 2],
    ]


@pytest.mark.parametrize("name", ["gop250", "gop12", "gop5-noB", "ntsc", "mkv"])
def test_pyav_equals_decode_all(videos, name):
    path = videos[name]
    total = probe(path).total_frames
    for indices in _index_sets(total):
        stats: dict[str, int] = {}
        fast = read_frames_pyav(path, indices, stats=stats)
        slow = decode_all_then_sample(path, indices)
        assert fast.dtype == np.uint8 and fast.shape == (len(indices), H, W, 3)
        assert np.array_equal(fast, slow), (name, indices)
        assert [read_code(f) for f in fast] == indices
        assert stats["fallback"] == 0, "a regular CFR file must not need the slow path"


def test_sparse_reads_seek_and_skip_work(videos):
    total = probe(videos["gop12"]).total_frames
    stats: dict[str, int] = {}
    read_frames_pyav(videos["gop12"], list(range(0, total, 30)), stats=stats)
    assert stats["seeks"] >= 3
    assert stats["decoded"] < total / 2
    stats = {}
    read_frames_pyav(videos["gop250"], list(range(0, 300, 15)), stats=stats)
    assert stats["decoded"] < 300, "non-reference frames between wanted ones are skipped"


@pytest.mark.parametrize("name", ["gop250", "gop12", "ntsc"])
@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_chunks_equal_decode_all(videos, name, threads, monkeypatch):
    # Real chunks span >= 600 frames; shrink that so these short clips get cut too.
    monkeypatch.setattr(decode, "MIN_CHUNK_SPAN", 30)
    path = videos[name]
    total = probe(path).total_frames
    for indices in _index_sets(total):
        stats: dict[str, int] = {}
        fast = read_frames_pyav(path, indices, threads=threads, stats=stats)
        assert np.array_equal(fast, decode_all_then_sample(path, indices)), (name, indices)
        assert [read_code(f) for f in fast] == indices
        assert stats["fallback"] == 0
    assert stats["chunks"] == min(threads, (total - 2) // 30)


def test_chunks_split_long_spans_only():
    assert decode._chunks(list(range(0, 300, 15)), 4) == [list(range(0, 300, 15))]
    chunks = decode._chunks(list(range(0, 1800, 15)), 2)
    assert [len(c) for c in chunks] == [60, 60] and chunks[1][0] == 900
    assert len(decode._chunks(list(range(0, 108000, 140)), 16)) == 16
    assert decode._chunks([5], 8) == [[5]]


def _reformat_oracle(path: Path, indices: list[int], size: tuple[int, int]) -> np.ndarray:
    """Decode everything, convert the wanted frames with the fast path's swscale call."""
    reformatter = VideoReformatter()
    kept = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                kept[i] = reformatter.reformat(
                    frame, width=size[1], height=size[0], format="rgb24",
                    interpolation=INTERPOLATION).to_ndarray()
    return np.stack([kept[i] for i in indices])


@pytest.mark.parametrize("size", [(112, 140), (28, 56), (64, 96)])
def test_resized_frames(videos, size):
    path = videos["gop250"]
    indices = [0, 7, 150, 151, 299]
    fast = read_frames_pyav(path, indices, size)
    assert fast.shape == (len(indices), *size, 3)
    assert np.array_equal(fast, _reformat_oracle(path, indices, size))
    if size[1] >= 56:
        assert [read_code(f) for f in fast] == indices
    # The naive baseline resizes with PIL: not the same pixels, but the same frames.
    naive = decode_all_then_sample(path, indices, size)
    assert naive.shape == fast.shape
    assert np.abs(naive.astype(int) - fast.astype(int)).mean() < 12


def test_irregular_timestamps_fall_back_to_decode_order(tmp_path):
    # Frames 0..59 with a hole in the timestamps after frame 29: not constant frame rate.
    pts = list(range(30)) + list(range(40, 70))
    path = make_video(tmp_path / "vfr.mp4", 60, pts=pts, options={"g": "10", "bf": "0"})
    indices = [0, 10, 29, 30, 45, 59]
    stats: dict[str, int] = {}
    fast = read_frames_pyav(path, indices, stats=stats)
    assert np.array_equal(fast, decode_all_then_sample(path, indices))
    assert [read_code(f) for f in fast] == indices
    assert stats["fallback"] == 1


def test_probe(videos):
    info = probe(videos["gop250"])
    assert info == VideoInfo(total_frames=300, fps=30.0, duration=10.0, width=W, height=H,
                             codec="h264", frames_exact=True)
    ntsc = probe(videos["ntsc"])
    assert ntsc.total_frames == 150 and ntsc.fps == pytest.approx(29.97, abs=1e-3)
    mkv = probe(videos["mkv"])
    assert not mkv.frames_exact and mkv.total_frames == pytest.approx(120, abs=1)


def _bad_files(tmp_path: Path, videos: dict[str, Path]) -> dict[str, tuple[Path, str]]:
    good = videos["gop250"].read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (tmp_path / "folder.mp4").mkdir()
    with av.open(str(tmp_path / "audio.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    return {
        "missing": (tmp_path / "missing.mp4", "file not found"),
        "empty": (tmp_path / "empty.mp4", "empty file"),
        "garbage": (tmp_path / "garbage.mp4", "cannot open"),
        "truncated": (tmp_path / "truncated.mp4", "cannot open"),
        "folder": (tmp_path / "folder.mp4", "not a regular file"),
        "audio": (tmp_path / "audio.wav", "no video stream"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "garbage", "truncated", "folder", "audio"])
def test_probe_and_read_errors_name_the_file(tmp_path, videos, case):
    path, reason = _bad_files(tmp_path, videos)[case]
    with pytest.raises(VideoDecodeError, match=reason) as info:
        probe(path)
    assert str(path) in str(info.value)
    with pytest.raises(VideoDecodeError, match=reason):
        read_frames_pyav(path, [0, 1])


def test_truncated_data_with_index_up_front(tmp_path, monkeypatch):
    # moov first (faststart): the container still says 300 frames, the data stops early.
    path = make_video(tmp_path / "fast.mp4", 300, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert probe(cut).total_frames == 300
    with pytest.raises(ShortVideoError, match=r"cut\.mp4: the stream ends before frame 299"
                       ) as info:
        read_frames_pyav(cut, [0, 100, 299])
    assert 100 < info.value.available < 300
    with pytest.raises(ShortVideoError, match="the stream ends before frame 299"):
        read_frames_pyav(cut, [0, 100, 299], threads=2)  # 299 - 0 < 600: one chunk
    assert [read_code(f) for f in read_frames_pyav(cut, [0, 100])] == [0, 100]
    monkeypatch.setattr(decode, "MIN_CHUNK_SPAN", 50)  # the last chunk seeks into the cut
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4: "):
        read_frames_pyav(cut, [0, 100, 150, 299], threads=2)
    with pytest.raises(VideoDecodeError):
        decode_all_then_sample(cut, [0, 299])


def test_decord_agrees(videos):
    pytest.importorskip("decord")
    for name in ("gop250", "gop12"):
        path = videos[name]
        indices = [0, 5, 12, 13, 100, 199]
        frames = read_frames_decord(path, indices)
        assert [read_code(f) for f in frames] == indices
        pyav = read_frames_pyav(path, indices)
        assert np.abs(frames.astype(int) - pyav.astype(int)).mean() < 3
        resized = read_frames_decord(path, indices, (56, 84))
        assert resized.shape == (len(indices), 56, 84, 3)
        assert [read_code(f) for f in resized] == indices


def test_decord_errors_are_decode_errors(tmp_path, videos):
    pytest.importorskip("decord")
    bad = _bad_files(tmp_path, videos)
    for case in ("missing", "empty", "garbage"):
        with pytest.raises(VideoDecodeError, match=case):
            read_frames_decord(bad[case][0], [0])
    with pytest.raises(VideoDecodeError, match="frame 999"):
        read_frames_decord(videos["gop12"], [0, 999])


def test_read_image_frames(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"{i:08d}.png"
        from PIL import Image

        Image.fromarray(code_frame(i)).save(p)
        paths.append(p)
    frames = read_image_frames(paths)
    assert frames.shape == (5, H, W, 3)
    assert [read_code(f) for f in frames] == list(range(5))
    assert np.array_equal(frames[2], code_frame(2))
    small = read_image_frames(paths, (56, 84))
    assert small.shape == (5, 56, 84, 3)
    assert [read_code(f) for f in small] == list(range(5))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoDecodeError, match=r"broken\.jpg: cannot read image"):
        read_image_frames([paths[0], tmp_path / "broken.jpg"])
    with pytest.raises(VideoDecodeError, match="file not found"):
        read_image_frames([tmp_path / "nope.jpg"])
