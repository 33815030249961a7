"""The data stages' bodies, run directly (no Prefect, no DVC) on small real data.

The frame-store checks here are the end-to-end ground-truth test: the synthetic generator's
annotations must hold on the frames that training will actually read, at the timestamps the
store records.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA_STAGES, TEST_PRESET, copy_params
from videorft.errors import DataValidationError
from videorft.io import read_jsonl
from videorft.params import Params, load_params, update_params
from videorft.prompts import build_prompt
from videorft.records import make_record
from videorft.sources.synthetic import COLOURS
from videorft.stages import get_stage, stage_names, stages_to_force, stages_to_run
from videorft.stages.build_dataset import assign_split
from videorft.video.plan import FRAMES_REPORT, frame_key
from videorft.video.sampling import SamplingConfig
from videorft.video.store import FrameStore

ROOT = Path(__file__).resolve().parents[1]


def _params(tmp_path: Path, *overrides: str) -> Params:
    path = copy_params(tmp_path)
    update_params(path, preset=TEST_PRESET, overrides=list(overrides))
    return load_params(path)


def _run(params: Params, root: Path, *stages: str) -> dict[str, dict]:
    return {name: get_stage(name)(params, root) for name in stages or DATA_STAGES}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Params]:
    """The default pipeline on 4 synthetic videos per task, with a roomier pixel budget."""
    root = tmp_path_factory.mktemp("synthetic")
    params = _params(
        root,
        "download.sources.0.options.samples_per_task="
        "{temporal_grounding: 4, tracking: 4, grounded_qa: 4, mcq: 4}",
        "extract_frames.total_pixels=200704",  # 256 x 28 x 28: frames keep most detail
    )
    _run(params, root)
    return root, params


def _colour_mask(frame: np.ndarray, colour: str, tolerance: float = 60.0) -> np.ndarray:
    distance = np.linalg.norm(frame.astype(np.float64) - np.array(COLOURS[colour]), axis=-1)
    return distance < tolerance


def _rows(root: Path, params: Params) -> list[dict]:
    folder = root / params.paths.dataset
    return [row for split in ("train", "val") for row in read_jsonl(folder / f"{split}.jsonl")]


def test_target_visible_exactly_inside_the_span(synthetic_run: tuple[Path, Params]) -> None:
    root, params = synthetic_run
    store = FrameStore(root / params.paths.frames)
    checked = 0
    for row in _rows(root, params):
        if row["task"] not in ("temporal_grounding", "grounded_qa"):
            continue
        span = (
            row["solution"] if row["task"] == "temporal_grounding" else row["solution"]["glue"][0]
        )
        frames = store.load(row["frames_key"])
        fps = row["meta"]["fps"]
        assert len(frames) == len(row["frame_timestamps"])
        for frame, t in zip(frames, row["frame_timestamps"], strict=True):
            if abs(t - span[0]) < 1 / fps or abs(t - span[1]) < 1 / fps:
                continue  # one source frame of tolerance at each edge (compression)
            visible = _colour_mask(frame, row["meta"]["colour"]).sum() >= 6
            assert visible == (span[0] <= t < span[1]), (row["id"], t, span)
            checked += 1
    assert checked >= 40


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_tracked_object_is_where_the_boxes_say(synthetic_run: tuple[Path, Params]) -> None:
    root, params = synthetic_run
    store = FrameStore(root / params.paths.frames)
    tracks = [row for row in _rows(root, params) if row["task"] == "tracking"]
    assert len(tracks) == 4
    for row in tracks:
        frames = store.load(row["frames_key"])
        meta = store.meta(row["frames_key"])
        assert len(frames) == 8 == len(row["solution"])
        # The store sampled exactly the frames the generator annotated.
        assert meta["indices"] == row["meta"]["sample_indices"]
        for frame, box in zip(frames, row["solution"], strict=True):
            detected = _box(_colour_mask(frame, row["meta"]["colour"]))
            assert _iou(detected, box) >= 0.7, (row["id"], detected, box)


def test_dataset_rows_carry_prompt_frames_and_video_level_split(
    synthetic_run: tuple[Path, Params],
) -> None:
    root, params = synthetic_run
    rows = _rows(root, params)
    assert len(rows) == 16
    store = FrameStore(root / params.paths.frames)
    for row in rows:
        meta = store.meta(row["frames_key"])
        assert row["frame_timestamps"] == meta["timestamps"]
        assert row["sample_fps"] == meta["sample_fps"]
        assert row["prompt"] == build_prompt(row, thinking=False)  # tiny-cpu: answers only
    assert {r["split"] for r in rows} == {"train", "val"}
    stats = json.loads((root / params.paths.reports / "dataset.json").read_text())
    assert stats["dropped"] == 0
    assert sum(sum(c.values()) for c in stats["counts"].values()) == 16


def test_split_is_per_video_and_follows_val_fraction() -> None:
    records = [
        make_record(
            id=f"s/{v}_{q}",
            task="temporal_grounding",
            source="s",
            video=f"s/{v}.mp4",
            inputs={"query": "q"},
            solution=[0.0, 1.0],
        )
        for v in range(400)
        for q in range(3)
    ]
    splits = {r["id"]: assign_split(r, val_fraction=0.2, seed=0) for r in records}
    for v in range(400):  # every query of a video lands in the same split
        assert len({splits[f"s/{v}_{q}"] for q in range(3)}) == 1
    share = sum(s == "val" for s in splits.values()) / len(splits)
    assert 0.15 < share < 0.25
    other_seed = {r["id"]: assign_split(r, val_fraction=0.2, seed=1) for r in records}
    assert other_seed != splits
    forced = {**records[0], "split": "test"}
    assert assign_split(forced, val_fraction=0.2, seed=0) == "test"


def _charades_params(root: Path) -> str:
    uri = root / "external" / "charades"
    return f"download.sources=[{{name: charades, type: charades_sta, uri: {uri}}}]"


def _charades_source(root: Path, lines: list[str], videos: dict[str, bytes]) -> None:
    folder = root / "external" / "charades"
    (folder / "videos").mkdir(parents=True)
    (folder / "charades_sta_train.txt").write_text("\n".join(lines) + "\n")
    for name, data in videos.items():
        (folder / "videos" / f"{name}.mp4").write_bytes(data)


def test_bad_video_is_quarantined_and_its_records_dropped(
    tmp_path: Path, synthetic_run: tuple[Path, Params]
) -> None:
    good = (synthetic_run[0] / "data/raw/synthetic/videos/temporal_grounding_0000.mp4").read_bytes()
    _charades_source(
        tmp_path,
        ["GOOD 0.5 2.0##a shape appears.", "BAD 1.0 2.0##it breaks."],
        {"GOOD": good, "BAD": b"\x00\x01 not a video at all"},
    )
    params = _params(
        tmp_path,
        _charades_params(tmp_path),
        "extract_frames.max_quarantine_fraction=0.5",
    )
    summary = _run(params, tmp_path)
    assert summary["extract_frames"]["quarantined"] == 1
    quarantine = json.loads((tmp_path / params.paths.frames / "quarantine.json").read_text())
    assert (
        quarantine[0]["record_ids"] == ["charades/BAD_0"] and "BAD.mp4" in quarantine[0]["reason"]
    )
    rows = _rows(tmp_path, params)
    assert [r["id"] for r in rows] == ["charades/GOOD_0"]
    # The text format has no duration: the measured one is filled in.
    assert rows[0]["duration"] == pytest.approx(
        FrameStore(tmp_path / params.paths.frames).meta(rows[0]["frames_key"])["duration"]
    )
    stats = json.loads((tmp_path / params.paths.reports / "dataset.json").read_text())
    assert stats["dropped_records"] == [
        {"id": "charades/BAD_0", "reason": "video quarantined or not extracted"}
    ]


def test_span_beyond_measured_duration_is_an_error(
    tmp_path: Path, synthetic_run: tuple[Path, Params]
) -> None:
    good = (synthetic_run[0] / "data/raw/synthetic/videos/temporal_grounding_0000.mp4").read_bytes()
    _charades_source(tmp_path, ["GOOD 1.0 500.0##far too long."], {"GOOD": good})
    params = _params(
        tmp_path,
        _charades_params(tmp_path),
    )
    _run(params, tmp_path, "download", "extract_frames")
    with pytest.raises(DataValidationError, match=r"records\.jsonl.*charades/GOOD_0.*beyond"):
        _run(params, tmp_path, "build_dataset")


def test_build_dataset_joins_frames_by_the_sampling_extract_frames_recorded(
    tmp_path: Path,
) -> None:
    """build_dataset reads the sampling from extract_frames' report, not from params: the
    store keeps every sampling it ran, so after fps 1 -> 2 -> 1 only the report tells which
    frames are current (and DVC sees the change through it)."""
    samples = "download.sources.0.options.samples_per_task={temporal_grounding: 2}"
    one_fps = _params(tmp_path, samples, "build_dataset.tasks=[temporal_grounding]",
                      "extract_frames.fps=1")
    _run(one_fps, tmp_path, "download", "extract_frames")
    two_fps = _params(tmp_path, samples, "build_dataset.tasks=[temporal_grounding]",
                      "extract_frames.fps=2")
    _run(two_fps, tmp_path, "extract_frames")
    _run(one_fps, tmp_path, "extract_frames")  # the store now holds both samplings
    report = json.loads((tmp_path / "reports" / FRAMES_REPORT).read_text())
    assert report["sampling"]["fps"] == 1.0

    _run(two_fps, tmp_path, "build_dataset")  # params say 2 fps; the frames are at 1
    recorded = SamplingConfig.from_params(one_fps.extract_frames)
    rows = _rows(tmp_path, two_fps)
    assert rows and all(row["frames_key"] == frame_key(row, recorded) for row in rows)
    asked = SamplingConfig.from_params(two_fps.extract_frames)
    assert all(row["frames_key"] != frame_key(row, asked) for row in rows)


@pytest.mark.parametrize(
    ("report", "problem"),
    [
        (None, "file not found"),
        ('{"items": 2, "quarantined": 0}', "no `sampling` recorded; run extract_frames first"),
        ('{"sampling": {"fps": -1}}', "bad `sampling`: invalid sampling config: fps must be > 0"),
        ('{"sampling": {"speed": 3}}', "bad `sampling`"),
    ],
)
def test_build_dataset_without_a_usable_frames_report_says_so(
    tmp_path: Path, report: str | None, problem: str
) -> None:
    params = _params(tmp_path)
    path = tmp_path / "reports" / FRAMES_REPORT
    if report is not None:
        path.parent.mkdir(parents=True)
        path.write_text(report)
    with pytest.raises(DataValidationError) as error:
        _run(params, tmp_path, "build_dataset")
    assert str(path) in str(error.value) and problem in str(error.value)
    assert "\n" not in str(error.value)


def test_on_invalid_skip_reports_and_continues(tmp_path: Path) -> None:
    _charades_source(
        tmp_path, ["A 1.0 2.0##fine.", "B 3.0 2.0##ends before it starts."], {"A": b"x", "B": b"x"}
    )
    uri = f"{tmp_path}/external/charades"
    strict = _params(tmp_path, f"download.sources=[{{name: c, type: charades_sta, uri: {uri}}}]")
    with pytest.raises(DataValidationError, match=r"c/B_0.*ends before it starts"):
        _run(strict, tmp_path, "download")
    lenient = _params(
        tmp_path,
        f"download.sources=[{{name: c, type: charades_sta, uri: {uri}}}]",
        "download.on_invalid=skip",
    )
    summary = _run(lenient, tmp_path, "download")["download"]
    assert summary["records"] == 1 and summary["rejected"] == 1
    rejects = json.loads((tmp_path / "reports" / "rejects.json").read_text())
    assert len(rejects) == 1 and "c/B_0" in rejects[0]


def test_stages_to_force_follows_the_dvc_graph() -> None:
    assert stages_to_force(ROOT) == set()
    assert stages_to_force(ROOT, force=True) == set(stage_names(ROOT))
    # Downstream in dvc.yaml's DAG, not "later in a list": base_model does not read the data.
    model = {"evaluate", "publish"}
    assert stages_to_force(ROOT, from_stage="extract_frames") == {
        "extract_frames", "build_dataset", "warm_start", "train", *model}
    assert stages_to_force(ROOT, from_stage="base_model") == {
        "base_model", "warm_start", "train", *model}
    assert stages_to_force(ROOT, from_stage="train") == {"train", *model}
    assert stages_to_force(ROOT, from_stage="publish") == {"publish"}
    # --to: the stage and what it depends on, in DAG order.
    assert stages_to_run(ROOT) == ["download", "extract_frames", "build_dataset", "base_model",
                                   "warm_start", "train", "evaluate", "publish"]
    assert stages_to_run(ROOT, "build_dataset") == ["download", "extract_frames", "build_dataset"]
    assert stages_to_run(ROOT, "warm_start") == [
        "download", "extract_frames", "build_dataset", "base_model", "warm_start"]
    with pytest.raises(KeyError, match="unknown stage 'tran'"):
        stages_to_run(ROOT, "tran")
    with pytest.raises(KeyError, match="unknown stage 'trian'"):
        stages_to_force(ROOT, from_stage="trian")
