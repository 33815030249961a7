"""The synthetic source: deterministic, valid, and its ground truth matches the decoded pixels."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from videorft.errors import ConfigError, DataValidationError
from videorft.io import read_jsonl, write_jsonl
from videorft.params import SourceParams
from videorft.records import OPTION_LETTERS, TASKS, validate_record
from videorft.sources import synthetic
from videorft.sources.synthetic import COLOURS, SHAPES
from videorft.video.sampling import sample_indices

SMALL = {"samples_per_task": {t: 2 for t in TASKS}}
COLOUR_TOLERANCE = 70  # RGB distance after yuv420p + crf 23 round trip
PRESENT_PIXELS = 20  # the smallest default shape has ~130 pixels
ABSENT_PIXELS = 3
Dataset = tuple[Path, list[dict[str, Any]]]  # raw root, parsed records


def _config(name: str = "synth", **options: Any) -> SourceParams:
    return SourceParams(name=name, type="synthetic", options=options)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The default generation (8 samples per task), parsed; shared by the pixel checks."""
    raw = tmp_path_factory.mktemp("raw")
    config = _config()
    synthetic.generate(config, raw / "synth")
    return raw, list(synthetic.parse(config, raw / "synth", raw))


def _decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="rgb24") for f in frames], [float(f.time) for f in frames]


def _segment(frame: np.ndarray, colour: str) -> np.ndarray:
    diff = frame.astype(np.int32) - np.array(COLOURS[colour], dtype=np.int32)
    return (diff**2).sum(axis=-1) < COLOUR_TOLERANCE**2


def _box(mask: np.ndarray) -> list[float]:
    """Half-open normalised box of the mask's pixels (the generator's convention)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return [cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h]


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _classify(mask: np.ndarray) -> str:
    """Shape kind from its pixels: fill ratio of the box, and where its widest row lies."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    fill = crop.mean()
    if fill > 0.9:
        return "square"
    if fill > 0.65:
        return "circle"
    widest = np.argmax(crop.sum(axis=1)) / (crop.shape[0] - 1)
    return "triangle" if widest > 0.7 else "diamond"


def _answer_text(record: dict[str, Any]) -> str:
    return record["inputs"]["options"][OPTION_LETTERS.index(record["solution"]["answer"])]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_span(raw: Path, record: dict[str, Any], colour: str, span: list[float]) -> str:
    """The colour is on screen exactly during span, give or take one frame at each edge
    (inter-frame prediction can leave a ghost block in the frame just before or after).

    Returns the shape kind seen in the middle of the span.
    """
    frames, times = _decode(raw / record["video"])
    fps = record["meta"]["fps"]
    assert len(frames) == round(record["duration"] * fps)
    assert times == pytest.approx([i / fps for i in range(len(frames))])  # frame i at i / fps
    start, end = span
    edges = {round(start * fps) + d for d in (-1, 0)} | {round(end * fps) + d for d in (-1, 0)}
    inside_frames = []
    for frame, t in zip(frames, times, strict=True):
        if round(t * fps) in edges:
            continue
        pixels = int(_segment(frame, colour).sum())
        if start <= t < end:
            assert pixels >= PRESENT_PIXELS, f"{record['id']}: {colour} missing at {t:.3f}s"
            inside_frames.append(frame)
        else:
            assert pixels <= ABSENT_PIXELS, f"{record['id']}: {colour} visible at {t:.3f}s"
    assert inside_frames
    return _classify(_segment(inside_frames[len(inside_frames) // 2], colour))


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    synthetic.generate(_config(**SMALL, seed=3), tmp_path / "a")
    synthetic.generate(_config(**SMALL, seed=3), tmp_path / "b")
    synthetic.generate(_config(**SMALL, seed=4), tmp_path / "c")
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert len([n for n in a if n.endswith(".mp4")]) == 8
    assert a == b
    assert a.keys() == c.keys()
    assert a["annotations.jsonl"] != c["annotations.jsonl"]
    assert all(a[n] != c[n] for n in a if n.endswith(".mp4"))


def test_encoding_in_worker_processes_gives_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synthetic, "available_cpus", lambda: 2)
    monkeypatch.setattr(synthetic, "MIN_VIDEOS_PER_WORKER", 4)  # 8 videos: 2 processes
    synthetic.generate(_config(**SMALL, seed=3), tmp_path / "pool")
    monkeypatch.setattr(synthetic, "MIN_VIDEOS_PER_WORKER", 10**6)  # this process alone
    synthetic.generate(_config(**SMALL, seed=3), tmp_path / "alone")
    assert _files(tmp_path / "pool") == _files(tmp_path / "alone")


def test_changing_one_task_count_keeps_the_other_tasks_samples(tmp_path: Path) -> None:
    synthetic.generate(_config(**SMALL), tmp_path / "a")
    more = {"samples_per_task": {**SMALL["samples_per_task"], "mcq": 3}}
    synthetic.generate(_config(**more), tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert "videos/mcq_0002.mp4" in b and "videos/mcq_0002.mp4" not in a
    assert all(b[n] == a[n] for n in a if n.startswith("videos/tracking"))


# --------------------------------------------------------------------------- records


def test_records_are_valid_in_requested_counts_with_balanced_letters(dataset: Dataset) -> None:
    raw, records = dataset
    for record in records:
        validate_record(record)
        assert (raw / record["video"]).is_file()
        assert record["duration"] == record["meta"]["n_frames"] / record["meta"]["fps"]
        assert 4.0 <= record["duration"] <= 8.0
    assert Counter(r["task"] for r in records) == {t: 8 for t in TASKS}
    assert len({r["video"] for r in records}) == len(records)
    for task in ("grounded_qa", "mcq"):
        letters = Counter(r["solution"]["answer"] for r in records if r["task"] == task)
        assert letters == {"A": 2, "B": 2, "C": 2, "D": 2}, (task, letters)
    queries = {r["inputs"]["query"].replace(r["meta"]["colour"], "").replace(r["meta"]["shape"], "")
               for r in records if r["task"] == "temporal_grounding"}
    assert len(queries) > 1  # several templates in use


def test_spans_lie_strictly_inside_and_last_at_least_a_second(dataset: Dataset) -> None:
    _, records = dataset
    for record in records:
        if record["task"] == "temporal_grounding":
            spans = [record["solution"]]
        elif record["task"] == "grounded_qa":
            spans = record["solution"]["glue"]
        else:
            continue
        for start, end in spans:
            assert start > 0 and end < record["duration"]
            assert end - start >= 1.0


def test_held_out_splits_by_video_and_keep_test_when_train_grows(tmp_path: Path) -> None:
    held = {"test": 4, "val": 2}
    counts = {"temporal_grounding": 8, "tracking": 0, "grounded_qa": 0, "mcq": 8}
    small = _config(samples_per_task=counts, held_out=held)
    synthetic.generate(small, tmp_path / "a")
    records = list(synthetic.parse(small, tmp_path / "a", tmp_path))
    for task in ("temporal_grounding", "mcq"):
        splits = Counter(r["split"] for r in records if r["task"] == task)
        assert splits == {"test": 4, "val": 2, "train": 2}, (task, splits)
    letters = Counter(r["solution"]["answer"] for r in records
                      if r["task"] == "mcq" and r["split"] == "test")
    assert letters == {"A": 1, "B": 1, "C": 1, "D": 1}  # balanced within the split
    assert len({r["video"] for r in records}) == len(records)  # one video per sample

    bigger = _config(samples_per_task={**counts, "mcq": 20}, held_out=held)
    synthetic.generate(bigger, tmp_path / "b")
    grown = list(synthetic.parse(bigger, tmp_path / "b", tmp_path))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")

    def held_out_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "video"} for r in rows
                if r["split"] != "train"]

    assert held_out_of(grown) == held_out_of(records)  # same ids, inputs, answers
    videos = [f"videos/{Path(r['video']).name}" for r in records if r["split"] != "train"]
    assert all(b[video] == a[video] for video in videos)
    assert Counter(r["split"] for r in grown if r["task"] == "mcq")["train"] == 14


def test_held_out_larger_than_a_task_is_refused(tmp_path: Path) -> None:
    config = _config(samples_per_task={"mcq": 3}, held_out={"test": 2, "val": 2})
    with pytest.raises(ConfigError, match="held_out takes 4 samples per task"):
        synthetic.generate(config, tmp_path / "synth")


def test_tasks_option_limits_generation(tmp_path: Path) -> None:
    config = _config(tasks=["mcq"], samples_per_task={"mcq": 3})
    synthetic.generate(config, tmp_path / "synth")
    records = list(synthetic.parse(config, tmp_path / "synth", tmp_path))
    assert [r["task"] for r in records] == ["mcq"] * 3


@pytest.mark.parametrize(
    "options",
    [{"colour": "red"}, {"width": 161}, {"samples_per_task": {"bogus": 1}},
     {"min_duration_s": 6.0, "max_duration_s": 5.0}, {"tasks": []}, {"fps": 1},
     {"tasks": ["mcq"], "samples_per_task": {"mcq": 0}},
     {"min_span_s": 2.0, "max_span_s": 1.0}, {"fps": 8, "span_grid_s": 0.3},
     {"min_duration_s": 3.0, "span_margin_s": 1.5}],
)
def test_bad_options_raise_config_error_naming_the_source(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match="'synth'"):
        synthetic.generate(_config(**options), tmp_path / "synth")
    assert not (tmp_path / "synth").exists()


def test_option_defaults_are_filled_and_documented() -> None:
    opts = synthetic.SyntheticOptions.model_validate({"samples_per_task": {"mcq": 1}})
    assert opts.samples_per_task == {"temporal_grounding": 8, "tracking": 8,
                                     "grounded_qa": 8, "mcq": 1}
    assert (opts.seed, opts.width, opts.height, opts.fps, opts.crf, opts.keyint) == (
        0, 160, 120, 8, 23, 16)
    assert all(f.description for f in synthetic.SyntheticOptions.model_fields.values())


def test_sample_indices_match_qwen_torch_formula() -> None:
    """Exact for nframes=8: i * (total - 1) / 7 is never within 1/14 of a .5 tie, far beyond
    float32 error at any length the generator allows (600 s x 60 fps)."""
    torch = pytest.importorskip("torch")
    for total in [*range(8, 1000), *range(1000, 36_001, 97)]:
        expected = torch.linspace(0, total - 1, 8).round().long().tolist()
        assert sample_indices(total, 8) == expected, total


# --------------------------------------------------------------------------- pixels


def test_temporal_grounding_span_matches_pixels(dataset: Dataset) -> None:
    raw, records = dataset
    for record in (r for r in records if r["task"] == "temporal_grounding"):
        query = record["inputs"]["query"]
        colour = next(c for c in COLOURS if f"{c} " in query)
        kind = next(s for s in SHAPES if s in query)
        assert _check_span(raw, record, colour, record["solution"]) == kind, record["id"]


def test_grounded_qa_answer_and_glue_match_pixels(dataset: Dataset) -> None:
    raw, records = dataset
    types = Counter()
    for record in (r for r in records if r["task"] == "grounded_qa"):
        answer = _answer_text(record)
        [span] = record["solution"]["glue"]
        if answer in COLOURS:
            types["colour"] += 1
            seen = _check_span(raw, record, answer, span)
            assert seen in record["inputs"]["question"], record["id"]
        else:
            types["shape"] += 1
            colour = record["meta"]["colour"]
            assert _check_span(raw, record, colour, span) == answer, record["id"]
        assert len(set(record["inputs"]["options"])) == 4
    assert types == {"colour": 4, "shape": 4}


def test_tracking_boxes_match_pixels_at_sampled_frames(dataset: Dataset) -> None:
    raw, records = dataset
    exact = []
    for record in (r for r in records if r["task"] == "tracking"):
        assert record["nframes"] == 8
        frames, _ = _decode(raw / record["video"])
        colour = record["inputs"]["object"].split()[0]
        indices = np.round(np.linspace(0, len(frames) - 1, 8)).astype(int)
        for index, box in zip(indices, record["solution"], strict=True):
            detected = _box(_segment(frames[index], colour))
            assert _iou(detected, box) >= 0.8, (record["id"], int(index), detected, box)
            exact.append(detected == pytest.approx(box, abs=1e-9))
        assert record["solution"][0] != record["solution"][-1]  # it does move
    # Shapes sit on the chroma grid, so decoding nearly always gives the very pixels drawn:
    # this catches off-by-one box conventions that IoU >= 0.8 lets through.
    assert sum(exact) >= 0.9 * len(exact), f"{sum(exact)}/{len(exact)} boxes pixel-exact"


def test_mcq_answers_match_pixels(dataset: Dataset) -> None:
    raw, records = dataset
    types = Counter()
    for record in (r for r in records if r["task"] == "mcq"):
        frames, _ = _decode(raw / record["video"])
        answer = _answer_text(record)
        if answer in ("left", "right", "up", "down"):
            types["direction"] += 1
            colour = next(c for c in COLOURS if f" {c} " in record["inputs"]["question"])
            (y0, x0), (y1, x1) = (np.argwhere(_segment(f, colour)).mean(axis=0)
                                  for f in (frames[0], frames[-1]))
            dx, dy = x1 - x0, y1 - y0
            moved = {"left": -dx, "right": dx, "up": -dy, "down": dy}[answer]
            side = abs(dy) if answer in ("left", "right") else abs(dx)
            assert moved > 10 and moved > 2 * side, (record["id"], answer, dx, dy)
        else:
            types["count"] += 1
            shown = sum(int(_segment(frames[len(frames) // 2], c).sum()) >= PRESENT_PIXELS
                        for c in COLOURS)
            assert shown == int(answer), record["id"]
    assert types == {"direction": 4, "count": 4}


def test_easier_scenes_draw_a_clock_bigger_shapes_and_no_distractors(
    tmp_path: Path, dataset: Dataset
) -> None:
    """time_bar, shape_scale and max_distractors: the clock's white share is the elapsed
    share of the video, shapes stay above it, and the ground truth still matches the pixels."""
    config = _config(**SMALL, time_bar=True, shape_scale=2.0, max_distractors=0)
    synthetic.generate(config, tmp_path / "easy")
    records = list(synthetic.parse(config, tmp_path / "easy", tmp_path))
    assert all(not r["meta"].get("distractors") for r in records)
    for record in records:
        frames, _ = _decode(tmp_path / record["video"])
        h, w = frames[0].shape[:2]
        assert not any(_segment(f[h - h // 6 :], c).any() for f in frames for c in COLOURS)
        for i, frame in enumerate(frames):
            white = (frame[h - h // 6 + 2 : h - 2].mean(axis=-1) > 128).mean(axis=0)
            assert abs(white.mean() - (i + 1) / len(frames)) <= 4 / w, (record["id"], i)
        if record["task"] == "temporal_grounding":
            query = record["inputs"]["query"]
            colour = next(c for c in COLOURS if f"{c} " in query)
            kind = next(s for s in SHAPES if s in query)
            assert _check_span(tmp_path, record, colour, record["solution"]) == kind
        if record["task"] == "tracking":
            colour = record["inputs"]["object"].split()[0]
            indices = np.round(np.linspace(0, len(frames) - 1, 8)).astype(int)
            for index, box in zip(indices, record["solution"], strict=True):
                assert _iou(_box(_segment(frames[index], colour)), box) >= 0.8, record["id"]
                assert box[3] <= 1 - (h // 6) / h + 1e-9  # above the clock

    def widths(rows: list[dict[str, Any]]) -> float:
        return float(np.mean([b[2] - b[0] for r in rows if r["task"] == "tracking"
                              for b in r["solution"]]))

    assert widths(records) > 1.5 * widths([r for r in dataset[1] if r["id"].endswith(("0", "1"))])


def test_span_grid_puts_appearances_on_whole_seconds(tmp_path: Path) -> None:
    """4 s videos, 1 s spans on a 1 s grid, no margin: the four seconds are the only answers,
    each is drawn, and the pixels agree."""
    config = _config(samples_per_task={"temporal_grounding": 16, "grounded_qa": 8, "tracking": 0,
                                       "mcq": 0}, fps=4, min_duration_s=4.0, max_duration_s=4.0,
                     span_grid_s=1.0, min_span_s=1.0, max_span_s=1.0, span_margin_s=0.0)
    synthetic.generate(config, tmp_path / "grid")
    records = list(synthetic.parse(config, tmp_path / "grid", tmp_path))
    spans = [r["solution"] if r["task"] == "temporal_grounding" else r["solution"]["glue"][0]
             for r in records]
    assert {tuple(s) for s in spans} == {(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)}
    for record in records[:4]:
        query = record["inputs"]["query"]
        colour = next(c for c in COLOURS if f"{c} " in query)
        _check_span(tmp_path, record, colour, record["solution"])


def _check_tracks_in_pixels(root: Path, records: list[dict]) -> None:
    """Each solution box is where the tracked object's colour is, at the 8 sampled frames."""
    for record in records:
        frames, _ = _decode(root / record["video"])
        colour = record["inputs"]["object"].split()[0]
        indices = np.round(np.linspace(0, len(frames) - 1, 8)).astype(int)
        for index, box in zip(indices, record["solution"], strict=True):
            assert _iou(_box(_segment(frames[index], colour)), box) >= 0.8, record["id"]


def test_corner_paths_cross_the_frame_on_twelve_fixed_tracks(tmp_path: Path) -> None:
    """tracking_paths corners: every object has one size and goes at constant speed from a
    corner to another, so the eight boxes take few values; the pixels agree at the sampled
    frames, and a track starts and ends on two different corners."""
    config = _config(samples_per_task={"temporal_grounding": 0, "grounded_qa": 0, "tracking": 24,
                                       "mcq": 0}, fps=4, min_duration_s=4.0, max_duration_s=4.0,
                     time_bar=True, max_distractors=0, tracking_paths="corners")
    synthetic.generate(config, tmp_path / "corners")
    records = list(synthetic.parse(config, tmp_path / "corners", tmp_path))
    assert len({round(b[2] - b[0], 9) for r in records for b in r["solution"]}) == 1  # one size
    tracks = set()
    for record in records:
        first, last = record["solution"][0], record["solution"][-1]
        ends = [(box[0] < 0.01, box[1] < 0.01) for box in (first, last)]
        assert ends[0] != ends[1], record["id"]  # two different corners
        for box in (first, last):
            assert box[0] < 0.01 or box[2] > 0.99, record["id"]  # at the left or right edge
        tracks.add(tuple(map(tuple, record["solution"])))
        frame = np.array(record["meta"]["sample_indices"], dtype=float)
        for axis, size in ((0, 160), (1, 120)):  # constant speed: linear in the frame index
            coords = np.array([box[axis] for box in record["solution"]]) * size
            fit = np.polyval(np.polyfit(frame, coords, 1), frame)
            assert np.abs(coords - fit).max() <= 1.5, record["id"]  # the 2-pixel grid
    assert 6 <= len(tracks) <= 12  # 24 videos share a few of the 12 tracks
    _check_tracks_in_pixels(tmp_path, records[:4])


def test_centre_paths_leave_no_track_to_guess_blind(tmp_path: Path) -> None:
    """tracking_paths centre: every track of a shape starts on one box at the centre and ends
    in a corner, the four ends mirror each other, and the pixels agree at the sampled frames.
    (A shape's tight box depends on its kind: a triangle's apex row differs by a cell.)"""
    config = _config(samples_per_task={"temporal_grounding": 0, "grounded_qa": 0, "tracking": 32,
                                       "mcq": 0}, fps=4, min_duration_s=4.0, max_duration_s=4.0,
                     time_bar=True, max_distractors=0, tracking_paths="centre")
    synthetic.generate(config, tmp_path / "centre")
    records = list(synthetic.parse(config, tmp_path / "centre", tmp_path))
    squares = [r for r in records if r["meta"]["shape"] == "square"]
    assert len({tuple(r["solution"][0]) for r in squares}) == 1  # one first box
    ends = {tuple(r["solution"][-1]) for r in squares}
    assert len(ends) == 4
    bottom = max(e[3] for e in ends)  # the stage ends above the time bar
    for x0, y0, x1, y1 in ends:  # in a corner of the stage
        assert (x0 < 0.01 or x1 > 0.99) and (y0 < 0.01 or y1 == bottom), (x0, y0, x1, y1)
    lefts, tops = sorted({e[0] for e in ends}), sorted({e[1] for e in ends})
    first = squares[0]["solution"][0]
    # Mirror images: the centre lies halfway between the left and right (top and bottom) ends.
    assert abs((lefts[0] + lefts[1]) / 2 - first[0]) <= 2 / 160
    assert abs((tops[0] + tops[1]) / 2 - first[1]) <= 2 / 120
    _check_tracks_in_pixels(tmp_path, records[:4])


def test_mirror_tracks_come_in_fours_of_one_scene(tmp_path: Path) -> None:
    """mirror_tracks: samples 4k..4k+3 share the scene and the target, their targets end in
    the four corners, each pair (4k, 4k+1), (4k+2, 4k+3) left-right mirrors, and the pixels
    agree; without mirror_tracks neighbours are independent scenes. A four never crosses
    splits."""
    options = dict(samples_per_task={"temporal_grounding": 0, "grounded_qa": 0, "tracking": 8,
                                     "mcq": 0}, fps=4, min_duration_s=4.0, max_duration_s=4.0,
                   time_bar=True, tracking_paths="centre", shape_scale=2.0)
    config = _config(mirror_tracks=True, **options)
    synthetic.generate(config, tmp_path / "mirrored")
    records = list(synthetic.parse(config, tmp_path / "mirrored", tmp_path))
    assert len(records) == 8
    for k in (0, 4):
        quad = records[k : k + 4]
        assert len({r["inputs"]["object"] for r in quad}) == 1
        assert len({tuple(r["meta"]["distractors"]) for r in quad}) == 1
        assert len({tuple(r["solution"][0]) for r in quad}) == 1  # one start: the centre
        start, ends = quad[0]["solution"][0], [r["solution"][-1] for r in quad]
        sides = [(e[0] < start[0], e[1] < start[1]) for e in ends]  # (left, up) of the start
        assert len(set(sides)) == 4  # the four corners
        for a, b in ((0, 1), (2, 3)):
            assert sides[a][0] != sides[b][0]  # left-right mirrors
            assert ends[a][1] == pytest.approx(ends[b][1])  # at one height
    _check_tracks_in_pixels(tmp_path, records[:4])
    plain = _config(**options)
    synthetic.generate(plain, tmp_path / "plain")
    objects = [r["inputs"]["object"] for r in synthetic.parse(plain, tmp_path / "plain", tmp_path)]
    assert len(set(objects[:4])) > 1
    with pytest.raises(ConfigError, match="mirror_tracks needs tracking_paths: centre"):
        synthetic.load_options(_config(mirror_tracks=True, tracking_paths="corners"))
    with pytest.raises(ConfigError, match="multiples of 4"):
        synthetic.load_options(_config(mirror_tracks=True, held_out={"val": 2}, **options))


def test_quadrant_tint_tells_where_a_patch_is(tmp_path: Path) -> None:
    """quadrant_tint: in the decoded video, the background is redder on the left, bluer on the
    right and greener on top than in the same scene untinted, the clock's strip is untouched,
    and the tracked object is still found by its colour at its true box."""
    options = dict(samples_per_task={"temporal_grounding": 0, "grounded_qa": 0, "tracking": 6,
                                     "mcq": 0}, fps=4, min_duration_s=4.0, max_duration_s=4.0,
                   time_bar=True, max_distractors=0, tracking_paths="centre", shape_scale=2.0)
    plain, tinted = _config(**options), _config(quadrant_tint=60.0, **options)
    synthetic.generate(plain, tmp_path / "plain")
    synthetic.generate(tinted, tmp_path / "tinted")
    for record in synthetic.parse(tinted, tmp_path / "tinted", tmp_path):
        frame = _decode(tmp_path / record["video"])[0][0].astype(int)
        base = _decode(tmp_path / record["video"].replace("tinted", "plain"))[0][0].astype(int)
        diff = frame - base
        corners = {"top left": diff[5:15, 5:15], "top right": diff[5:15, -15:-5],
                   "bottom left": diff[80:90, 5:15], "bottom right": diff[80:90, -15:-5]}
        for name, patch in corners.items():
            red, green, blue = (patch[..., c].mean() for c in range(3))
            assert (red > blue + 30) == ("left" in name), (record["id"], name, red, blue)
            assert (green > 30) == ("top" in name), (record["id"], name, green)
        assert np.abs(diff[-4:]).mean() < 2, record["id"]  # the clock's strip: codec bleed only
        colour = record["inputs"]["object"].split()[0]
        assert _iou(_box(_segment(frame.astype(np.uint8), colour)), record["solution"][0]) >= 0.8


def test_span_settings_that_fit_no_video_are_refused(tmp_path: Path) -> None:
    config = _config(samples_per_task={"temporal_grounding": 1}, tasks=["temporal_grounding"],
                     fps=4, min_duration_s=4.0, max_duration_s=4.0, span_grid_s=3.0,
                     min_span_s=1.0, max_span_s=2.0, span_margin_s=0.5)
    with pytest.raises(ConfigError, match="no appearance"):
        synthetic.generate(config, tmp_path / "grid")


# --------------------------------------------------------------------------- idempotence


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) per file: a rewrite through a temp file changes at least the inode."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_generate_is_idempotent_and_regenerates_on_change(tmp_path: Path) -> None:
    folder = tmp_path / "synth"
    synthetic.generate(_config(**SMALL), folder)
    before, contents = _stamps(folder), _files(folder)
    synthetic.generate(_config(**SMALL), folder)
    assert _stamps(folder) == before

    synthetic.generate(_config(**SMALL, crf=30), folder)
    after = _files(folder)
    assert after.keys() == contents.keys()
    assert all(after[n] != contents[n] for n in contents if n != "annotations.jsonl")
    assert json.loads((folder / "generator.json").read_text())["options"]["crf"] == 30


def test_fewer_samples_remove_stale_videos(tmp_path: Path) -> None:
    folder = tmp_path / "synth"
    synthetic.generate(_config(**SMALL), folder)
    (folder / "videos" / "notes.txt").write_text("not ours")
    synthetic.generate(_config(tasks=["tracking"], samples_per_task={"tracking": 1}), folder)
    assert sorted(p.name for p in (folder / "videos").iterdir()) == [
        "notes.txt", "tracking_0000.mp4"]


def test_interrupted_generation_is_redone(tmp_path: Path) -> None:
    """No annotations (killed before the last write) or a lost video means: render again."""
    folder = tmp_path / "synth"
    synthetic.generate(_config(**SMALL), folder)
    expected = _files(folder)
    (folder / "annotations.jsonl").unlink()
    synthetic.generate(_config(**SMALL), folder)
    assert _files(folder) == expected
    (folder / "videos" / "mcq_0001.mp4").unlink()
    synthetic.generate(_config(**SMALL), folder)
    assert _files(folder) == expected


def test_generation_killed_midway_never_passes_for_the_old_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with new options that dies after overwriting some videos must not leave the old
    options' annotations looking current (they would describe the wrong pixels)."""
    folder = tmp_path / "synth"
    synthetic.generate(_config(**SMALL), folder)
    expected = _files(folder)
    real_encode, calls = synthetic._encode, []

    def dying_encode(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_encode(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_encode", dying_encode)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(_config(**SMALL, seed=9), folder)
    assert not (folder / "annotations.jsonl").exists()
    monkeypatch.setattr(synthetic, "_encode", real_encode)
    synthetic.generate(_config(**SMALL), folder)
    assert _files(folder) == expected


# --------------------------------------------------------------------------- parse


def test_parse_rebases_ids_paths_and_split(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    folder = raw / "nested" / "gen"
    config = SourceParams(name="toy", type="synthetic", split="val", options=SMALL)
    synthetic.generate(config, folder)
    records = list(synthetic.parse(config, folder, raw))
    native = [r["id"] for r in read_jsonl(folder / "annotations.jsonl")]
    assert [r["id"] for r in records] == [f"toy/{n}" for n in native]
    for record, name in zip(records, native, strict=True):
        assert record["video"] == f"nested/gen/videos/{name}.mp4"
        assert (raw / record["video"]).is_file()
        assert record["source"] == "toy" and record["split"] == "val"


def test_parse_rejects_tampered_annotation_naming_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "synth"
    config = _config(**SMALL)
    synthetic.generate(config, folder)
    annotations = folder / "annotations.jsonl"
    rows = list(read_jsonl(annotations))
    target = next(r for r in rows if r["task"] == "temporal_grounding")
    target["solution"] = [target["solution"][1], target["solution"][0]]  # end < start
    write_jsonl(annotations, rows)
    with pytest.raises(DataValidationError, match="ends before it starts") as info:
        list(synthetic.parse(config, folder, tmp_path))
    assert info.value.file == str(annotations)
    assert info.value.record == f"synth/{target['id']}"
    assert str(annotations) in str(info.value)


def test_parse_on_invalid_reports_and_skips_bad_lines(tmp_path: Path) -> None:
    folder = tmp_path / "synth"
    config = _config(**SMALL)
    synthetic.generate(config, folder)
    annotations = folder / "annotations.jsonl"
    lines = annotations.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["solution"] = [3.0, 1.0]
    deep = "[" * 50_000 + "]" * 50_000  # past Python's parser: RecursionError
    annotations.write_text("\n".join([json.dumps(bad), "{not json", deep, *lines[1:]]) + "\n")
    problems: list[DataValidationError] = []
    records = list(synthetic.parse(config, folder, tmp_path, on_invalid=problems.append))
    assert len(records) == len(lines) - 1
    assert f"synth/{bad['id']}" not in {r["id"] for r in records}
    assert [p.file for p in problems] == [str(annotations)] * 3
    assert "ends before it starts" in str(problems[0]) and "line 2" in str(problems[1])
    assert "line 3: " in str(problems[2]) and "nested too deeply" in str(problems[2])


def test_parse_rejects_paths_escaping_the_folder_and_missing_annotations(tmp_path: Path) -> None:
    folder = tmp_path / "synth"
    config = _config(**SMALL)
    with pytest.raises(DataValidationError, match=r"annotations\.jsonl"):
        list(synthetic.parse(config, folder, tmp_path))
    synthetic.generate(config, folder)
    rows = list(read_jsonl(folder / "annotations.jsonl"))
    rows[0]["video"] = "../../etc/passwd"
    write_jsonl(folder / "annotations.jsonl", rows)
    with pytest.raises(DataValidationError, match="escapes"):
        list(synthetic.parse(config, folder, tmp_path))


def test_one_query_wording_keeps_every_scene_and_fixes_the_sentence(tmp_path: Path) -> None:
    """`wordings: 1`: every temporal-grounding query has the first wording; the
    scenes (and every other sample) are those of the default, drawn from the same seed."""
    counts = {"samples_per_task": {"temporal_grounding": 12, "grounded_qa": 0, "tracking": 0,
                                   "mcq": 0}}
    default, fixed = _config(**counts), _config(**counts, wordings=1)
    synthetic.generate(default, tmp_path / "default")
    synthetic.generate(fixed, tmp_path / "fixed")
    a = list(synthetic.parse(default, tmp_path / "default", tmp_path))
    b = list(synthetic.parse(fixed, tmp_path / "fixed", tmp_path))
    def wording(record: dict) -> str:
        return " ".join("_" if word in (*COLOURS, *synthetic.SHAPES) else word
                        for word in record["inputs"]["query"].split())

    assert len({wording(r) for r in a}) > 1  # the default varies the sentence ...
    assert {wording(r) for r in b} == {"the _ _ appears"}  # ... one wording here
    assert [r["solution"] for r in a] == [r["solution"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert (tmp_path / ra["video"]).read_bytes() == (tmp_path / rb["video"]).read_bytes()


def test_canonical_options_fix_the_order_and_balance_the_answers(tmp_path: Path) -> None:
    """`canonical_options`: every question lists the same options in the same order, the
    letter always names the same answer (the one the video shows), letters stay balanced."""
    config = _config(samples_per_task={"temporal_grounding": 0, "tracking": 0,
                                       "grounded_qa": 16, "mcq": 16},
                     canonical_options=True)
    synthetic.generate(config, tmp_path / "synth")
    records = list(synthetic.parse(config, tmp_path / "synth", tmp_path))
    shown = {"shape": lambda m: m["shape"], "colour": lambda m: m["colour"],
             "direction": lambda m: m["direction"], "count": lambda m: str(m["count"])}
    canonical = {"shape": list(SHAPES), "colour": list(synthetic.CANONICAL_COLOURS),
                 "direction": list(synthetic.DIRECTIONS), "count": ["1", "2", "3", "4"]}
    for record in records:
        qtype = record["meta"]["question_type"]
        options = record["inputs"]["options"]
        assert options == canonical[qtype], record["id"]
        answer = options[OPTION_LETTERS.index(record["solution"]["answer"])]
        assert answer == shown[qtype](record["meta"]), record["id"]
    letters = Counter((r["task"], r["solution"]["answer"]) for r in records)
    assert letters == {**{("grounded_qa", x): 4 for x in "ABCD"},
                       **{("mcq", x): 4 for x in "ABCD"}}
    assert Counter(r["meta"]["question_type"] for r in records) == {
        "shape": 8, "colour": 8, "direction": 8, "count": 8}
    for r in (r for r in records if r["task"] == "grounded_qa"):
        # The answer names one thing on screen: no distractor has the target's shape or colour.
        for name in r["meta"]["distractors"]:
            colour, shape = name.split()
            assert shape != r["meta"]["shape"] and colour != r["meta"]["colour"], r["id"]


def test_question_types_are_chosen_in_turn(tmp_path: Path) -> None:
    config = _config(samples_per_task={"temporal_grounding": 0, "tracking": 0,
                                       "grounded_qa": 4, "mcq": 4},
                     gqa_questions=["colour"], mcq_questions=["count"])
    synthetic.generate(config, tmp_path / "synth")
    records = list(synthetic.parse(config, tmp_path / "synth", tmp_path))
    assert Counter(r["meta"]["question_type"] for r in records) == {"colour": 4, "count": 4}
