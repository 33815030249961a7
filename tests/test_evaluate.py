"""The evaluate stage: resumable predictions, the comparison report, the stage's outputs.

- predict writes ``videorft score``'s format, resumes after a torn line generating only the
  missing rows (greedy: the result equals an uninterrupted run), never loads the model when
  every row is predicted, and starts afresh when the generation settings change.
- the blind control: what reaches the processor in a blind pass is all-zero uint8 frames of
  the real pass's shapes and fps, giving the same prompt tokens and video grid; blind answers
  are fingerprinted apart from real ones and resume like them.
- report: deltas and the paper-style table on hand-made metrics (blind columns, intervals, the
  legend); plots are PNGs.
- the stage on a copy of the tiny project, base and trained both the tiny model: every output
  is written (blind predictions included), each model is loaded once for both passes, every
  delta and its interval is exactly 0, and re-scoring the predictions files reproduces
  metrics.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import project_params
from videorft.errors import StageError
from videorft.evaluation import report
from videorft.evaluation.predict import fingerprint_path, predict
from videorft.evaluation.scoring import METRICS, read_predictions, score_file, score_predictions
from videorft.io import atomic_write_json, read_jsonl
from videorft.trainer.data import load_split
from videorft.video.store import FrameStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def setup(tiny_project) -> dict[str, Any]:
    root, params = tiny_project
    dataset = root / params.paths.dataset
    rows = load_split(dataset, "train") + load_split(dataset, "val")
    return {"root": root, "params": params, "rows": rows, "model": str(root / "tiny-model"),
            "store": FrameStore(root / params.paths.frames)}


def _predict(setup: dict[str, Any], out: Path, rows: list[dict] | None = None,
             **overrides: Any) -> list[dict[str, Any]]:
    kwargs = {"max_new_tokens": MAX_NEW_TOKENS, "batch_size": 3, "dtype": "float32",
              "attn_implementation": None, "progress": False, **overrides}
    return predict(setup["model"], setup["rows"] if rows is None else rows, setup["store"],
                   out, **kwargs)


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory) -> Path:
    """An uninterrupted run's predictions file."""
    out = tmp_path_factory.mktemp("reference") / "predictions.jsonl"
    _predict(setup, out)
    return out


class Counter:
    """Wraps generate_answers, recording the ids of the rows it is asked to answer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import videorft.model.generate as generate

        self.ids: list[str] = []
        real = generate.generate_answers

        def counting(model, processor, rows, store, **kwargs):
            self.ids.extend(row["id"] for row in rows)
            return real(model, processor, rows, store, **kwargs)

        monkeypatch.setattr(generate, "generate_answers", counting)


def _forbid_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import videorft.model.loading as loading

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model must not be loaded: every row is predicted")

    monkeypatch.setattr(loading, "load_model_and_processor", refuse)


class Loads:
    """Wraps load_model_and_processor, recording the model each call loads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import videorft.model.loading as loading

        self.models: list[str] = []
        real = loading.load_model_and_processor

        def recording(model, **kwargs):
            self.models.append(str(model))
            return real(model, **kwargs)

        monkeypatch.setattr(loading, "load_model_and_processor", recording)


class ProcessorSpy:
    """Wraps the processor call of every batch (videorft.model.inputs.process_videos): the
    prompts and (frames, fps) that reach the processor, and the tensors it returns."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import videorft.model.inputs as inputs

        self.calls: list[dict[str, Any]] = []
        real = inputs.process_videos

        def spying(processor, texts, videos, **kwargs):
            result = real(processor, texts, videos, **kwargs)
            self.calls.append({
                "texts": list(texts),
                "videos": [(np.array(frames), float(fps)) for frames, fps in videos],
                "inputs": {key: value.clone() for key, value in result.items()},
            })
            return result

        monkeypatch.setattr(inputs, "process_videos", spying)


def _copy_predictions(source: Path, out: Path) -> Path:
    """A predictions file and its fingerprint copied to ``out`` (a run that left them)."""
    shutil.copy(source, out)
    shutil.copy(fingerprint_path(source), fingerprint_path(out))
    return out


def test_predict_writes_the_scoring_format(setup, reference) -> None:
    rows = setup["rows"]
    items = read_predictions(reference)
    assert [item["id"] for item in items] == [row["id"] for row in rows]
    for line in read_jsonl(reference):
        assert set(line) == {"id", "task", "source", "completion", "solution"}
        assert isinstance(line["completion"], str)
    for item, row in zip(items, rows, strict=True):
        assert item["task"] == row["task"] and item["source"] == row["source"]
    sidecar = json.loads(fingerprint_path(reference).read_text())
    assert sidecar["generation"]["max_new_tokens"] == MAX_NEW_TOKENS
    assert set(sidecar["rows"]) == {row["id"] for row in rows}


def test_predict_resumes_after_a_torn_line(setup, reference, tmp_path, monkeypatch) -> None:
    out = _copy_predictions(reference, tmp_path / "predictions.jsonl")
    lines = reference.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # crash mid-write of line 2
    counter = Counter(monkeypatch)
    predictions = _predict(setup, out)
    assert counter.ids == [row["id"] for row in setup["rows"][1:]]
    assert out.read_bytes() == reference.read_bytes()
    assert predictions == list(read_jsonl(reference))


def test_predict_extends_to_new_rows_only(setup, reference, tmp_path, monkeypatch) -> None:
    """Evaluating more items later reuses the answers already there, per row."""
    out = tmp_path / "predictions.jsonl"
    rows = setup["rows"]
    _predict(setup, out, rows=rows[::2])
    counter = Counter(monkeypatch)
    _predict(setup, out)
    assert counter.ids == [row["id"] for row in rows[1::2]]
    assert out.read_bytes() == reference.read_bytes()  # back in row order


def test_predict_does_not_load_the_model_when_done(setup, reference, tmp_path,
                                                   monkeypatch) -> None:
    out = _copy_predictions(reference, tmp_path / "predictions.jsonl")
    _forbid_loading(monkeypatch)
    predictions = _predict(setup, out)
    assert predictions == list(read_jsonl(reference))
    # A subset of the rows is "all done" too; the file then holds just that subset.
    predictions = _predict(setup, out, rows=setup["rows"][:3])
    assert [p["id"] for p in read_jsonl(out)] == [r["id"] for r in setup["rows"][:3]]


def test_blind_pass_feeds_blank_frames_of_the_real_shape(setup, tmp_path, monkeypatch) -> None:
    import torch

    from videorft.evaluation.predict import LazyModel

    spy = ProcessorSpy(monkeypatch)
    loads = Loads(monkeypatch)
    with LazyModel(setup["model"], dtype="float32", attn_implementation=None) as loaded:
        _predict(setup, tmp_path / "video.jsonl", loaded=loaded)
        real, spy.calls = spy.calls, []
        _predict(setup, tmp_path / "blind.jsonl", loaded=loaded, blind=True)
        blind = spy.calls
    assert loads.models == [setup["model"]]  # one load, both passes
    assert real and len(blind) == len(real)
    assert any(frames.any() for call in real for frames, _ in call["videos"])
    for seen, shown in zip(blind, real, strict=True):
        assert seen["texts"] == shown["texts"]
        for (frames, fps), (real_frames, real_fps) in zip(seen["videos"], shown["videos"],
                                                          strict=True):
            assert frames.dtype == np.uint8 and frames.shape == real_frames.shape
            assert not frames.any()  # every pixel of every frame is 0
            assert fps == real_fps
        for key in ("input_ids", "attention_mask", "mm_token_type_ids", "video_grid_thw",
                    "second_per_grid_ts"):
            assert torch.equal(seen["inputs"][key], shown["inputs"][key]), key
        pixels, real_pixels = seen["inputs"]["pixel_values_videos"], \
            shown["inputs"]["pixel_values_videos"]
        assert pixels.shape == real_pixels.shape and not torch.equal(pixels, real_pixels)

    # The blind file is a predictions file like any other, fingerprinted apart from the real one.
    items = read_predictions(tmp_path / "blind.jsonl")
    assert [item["id"] for item in items] == [row["id"] for row in setup["rows"]]
    video_print = json.loads(fingerprint_path(tmp_path / "video.jsonl").read_text())
    blind_print = json.loads(fingerprint_path(tmp_path / "blind.jsonl").read_text())
    assert "frames" not in video_print and blind_print.pop("frames") == "blank"
    assert blind_print == video_print


def test_blind_pass_never_reuses_real_answers_and_resumes_its_own(setup, reference, tmp_path,
                                                                  monkeypatch) -> None:
    out = _copy_predictions(reference, tmp_path / "predictions.jsonl")
    counter = Counter(monkeypatch)
    _predict(setup, out, blind=True)  # the file holds real answers: all rows are asked again
    assert counter.ids == [row["id"] for row in setup["rows"]]
    assert json.loads(fingerprint_path(out).read_text())["frames"] == "blank"
    blind_bytes = out.read_bytes()
    _forbid_loading(monkeypatch)  # complete: the blind pass resumes without loading the model
    _predict(setup, out, blind=True)
    assert out.read_bytes() == blind_bytes


def test_predict_restarts_when_generation_settings_change(setup, reference, tmp_path,
                                                          monkeypatch) -> None:
    out = _copy_predictions(reference, tmp_path / "predictions.jsonl")
    counter = Counter(monkeypatch)
    _predict(setup, out, max_new_tokens=MAX_NEW_TOKENS - 4)
    assert counter.ids == [row["id"] for row in setup["rows"]]
    assert json.loads(fingerprint_path(out).read_text())["generation"]["max_new_tokens"] == 4
    assert len(read_predictions(out)) == len(setup["rows"])


# ------------------------------------------------------------------------------------ report

METRICS_BY_MODEL = {
    "base": {
        "charades": {"temporal_grounding": {"miou": 0.25, "r@0.3": 0.4, "r@0.5": 0.2,
                                            "r@0.7": 0.1, "count": 10}},
        "nextgqa": {"grounded_qa": {"accuracy": 0.5, "miou": 0.123456, "count": 4}},
    },
    "trained": {
        "charades": {"temporal_grounding": {"miou": 0.373, "r@0.3": 0.4, "r@0.5": 0.15,
                                            "r@0.7": 0.1, "count": 10}},
        "nextgqa": {"grounded_qa": {"accuracy": 0.75, "miou": 0.2, "count": 4}},
    },
}


def test_compare_gives_signed_deltas_without_counts() -> None:
    delta = report.compare(METRICS_BY_MODEL, "base")
    tg = delta["charades"]["temporal_grounding"]
    assert "count" not in tg
    assert tg["miou"] == pytest.approx(0.123)
    assert tg["r@0.5"] == pytest.approx(-0.05)
    assert tg["r@0.3"] == 0
    assert delta["nextgqa"]["grounded_qa"]["accuracy"] == pytest.approx(0.25)
    with pytest.raises(KeyError, match="warm_start"):
        report.compare(METRICS_BY_MODEL, "warm_start")


def test_markdown_table_reads_like_the_paper() -> None:
    table = report.markdown_table(METRICS_BY_MODEL, ["base", "trained"], "base")
    lines = table.strip().splitlines()
    assert lines[0] == "| Benchmark | Task | Metric | base | trained | Δ (trained − base) | Items |"
    assert "| charades | temporal grounding | miou | 25.0 | 37.3 | +12.3 | 10 |" in lines
    assert "| charades | temporal grounding | r@0.5 | 20.0 | 15.0 | -5.0 | 10 |" in lines
    assert "| charades | temporal grounding | r@0.3 | 40.0 | 40.0 | +0.0 | 10 |" in lines
    assert "| nextgqa | grounded qa | miou | 12.3 | 20.0 | +7.7 | 4 |" in lines
    # Metric rows follow the paper's order within a task.
    tg = [line.split(" | ")[2] for line in lines if "temporal grounding" in line]
    assert tg == list(METRICS["temporal_grounding"])
    # Without the baseline there is no delta column.
    alone = report.markdown_table({"trained": METRICS_BY_MODEL["trained"]}, ["trained"], "base")
    assert "Δ" not in alone


BLIND_BY_MODEL = {
    model: {source: {task: {name: (value if name == "count" else value / 2)
                            for name, value in values.items()}
                     for task, values in tasks.items()}
            for source, tasks in by_source.items()}
    for model, by_source in METRICS_BY_MODEL.items()
}


def _spread(table: dict[str, Any], width: float) -> dict[str, Any]:
    """``{value, low, high}`` intervals of half-width ``width`` around each metric."""
    return {source: {task: {name: {"value": v, "low": v - width, "high": v + width}
                            for name, v in values.items() if name != "count"}
                     for task, values in tasks.items()}
            for source, tasks in table.items()}


def test_markdown_table_with_blind_values_and_intervals() -> None:
    deltas = report.compare(METRICS_BY_MODEL, "base")
    intervals = _spread(deltas, 0.04)
    table = report.markdown_table(
        METRICS_BY_MODEL, ["base", "trained"], "base", blind=BLIND_BY_MODEL,
        delta_intervals=intervals, bootstrap={"samples": 2000, "confidence": 0.95, "seed": 0},
    )
    lines = table.strip().splitlines()
    assert lines[0] == ("| Benchmark | Task | Metric | base | base blind | trained | "
                        "trained blind | Δ (trained − base) | Items |")
    assert ("| charades | temporal grounding | miou | 25.0 | 12.5 | 37.3 | 18.6 | "
            "+12.3 [+8.3, +16.3] | 10 |") in lines
    assert ("| charades | temporal grounding | r@0.3 | 40.0 | 20.0 | 40.0 | 20.0 | "
            "+0.0 [-4.0, +4.0] | 10 |") in lines
    legend = lines[-1]
    assert lines[-2] == "" and not legend.startswith("|")
    assert "95% paired bootstrap interval over items (2000 resamples, seed 0)" in legend
    assert "wholly above 0 means trained is significantly better than base" in legend
    assert "wholly below 0 significantly worse" in legend and "blind" in legend
    # The whole metrics.json renders to the same table.
    assert report.table_from_report({
        "models": METRICS_BY_MODEL, "blind": BLIND_BY_MODEL, "baseline": "base",
        "target": "trained", "intervals": {"delta": intervals},
        "bootstrap": {"samples": 2000, "confidence": 0.95, "seed": 0},
    }) == table


def test_blind_answers_out_of_format_get_a_warning_and_no_table_row() -> None:
    """A blind pass whose answers are in format much less often than with the video reads as
    reliance on the video: the table says so under it, and the format share is no table row."""
    seen = {"charades": {"temporal_grounding": {"miou": 0.5, "format": 1.0, "count": 4},
                         "mcq": {"accuracy": 0.5, "format": 1.0, "count": 4}}}
    unseen = {"charades": {"temporal_grounding": {"miou": 0.0, "format": 0.25, "count": 4},
                           "mcq": {"accuracy": 0.25, "format": 0.8, "count": 4}}}
    warnings = report.format_warnings({"trained": seen}, {"trained": unseen})
    assert warnings == [  # mcq: 0.2 below, under the 0.25 gap; temporal grounding 0.75 below
        "trained blind, charades temporal grounding: 25.0% of the answers are in the task's "
        "format against 100.0% with the video, so value − blind there also counts answers that "
        "broke without it."
    ]
    table = report.markdown_table({"trained": seen}, ["trained"], "base",
                                  blind={"trained": unseen})
    assert "| format |" not in table
    assert table.strip().splitlines()[-1] == "**Blind answers out of format.** " + warnings[0]
    in_format = {"trained": {"charades": {"temporal_grounding": {
        **unseen["charades"]["temporal_grounding"], "format": 0.9}}}}
    assert report.format_warnings({"trained": seen}, in_format) == []
    assert "out of format" not in report.markdown_table(
        {"trained": seen}, ["trained"], "base", blind=in_format)
    # Metrics without format shares (older metrics.json) give no warning.
    assert report.format_warnings(METRICS_BY_MODEL, BLIND_BY_MODEL) == []


def test_bars_and_plots(tmp_path) -> None:
    rows = report.bars_table(METRICS_BY_MODEL, ["base", "trained"])
    assert {"metric": "charades/temporal_grounding/miou", "model": "trained",
            "value": 0.373} in rows
    assert len(rows) == 2 * (4 + 2) and all(r["metric"].count("/") == 2 for r in rows)
    with_blind = report.bars_table(METRICS_BY_MODEL, ["base", "trained"], BLIND_BY_MODEL)
    assert len(with_blind) == 2 * len(rows)  # each model's rows, then its blind rows
    assert [r["model"] for r in with_blind[:8]] == ["base"] * 4 + ["base-blind"] * 4
    assert {"metric": "charades/temporal_grounding/miou", "model": "trained-blind",
            "value": 0.373 / 2} in with_blind
    items = {
        model: [{"id": f"x{i}", "task": task, "iou": iou, "accuracy": None}
                for i, (task, iou) in enumerate([("temporal_grounding", 0.1 + shift),
                                                 ("temporal_grounding", 0.5),
                                                 ("tracking", 0.3 + shift), ("mcq", None)])]
        for model, shift in (("base", 0.0), ("trained", 0.2))
    }
    report.plot_iou_distribution(items, tmp_path / "plots" / "iou.png")
    intervals = {
        "models": {m: _spread(t, 0.05) for m, t in METRICS_BY_MODEL.items()},
        "blind": {m: _spread(t, 0.05) for m, t in BLIND_BY_MODEL.items()},
    }
    report.plot_metrics(METRICS_BY_MODEL, ["base", "trained"], tmp_path / "plots" / "m.png",
                        intervals=intervals, blind=BLIND_BY_MODEL)
    report.plot_metrics(METRICS_BY_MODEL, ["base", "trained"], tmp_path / "plots" / "plain.png")
    for name in ("iou.png", "m.png", "plain.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "iou.png", "m.png", "plain.png"]
    # Error bars and blind bars are drawn: the picture differs from the plain one.
    assert (tmp_path / "plots" / "m.png").read_bytes() != (
        tmp_path / "plots" / "plain.png").read_bytes()


# ------------------------------------------------------------------------------------- stage


@pytest.fixture
def project(tiny_project, tmp_path) -> Path:
    """A private copy of the tiny project: base and trained are both the tiny model."""
    source, params = tiny_project
    root = tmp_path / "project"
    shutil.copytree(source, root)
    atomic_write_json(root / params.paths.base_model / "model_info.json",
                      {"source": "local", "load": str(root / "tiny-model")})
    shutil.copytree(root / "tiny-model", root / params.paths.trained)
    return root


def _leaves(tree: dict[str, Any], depth: int) -> dict[tuple[str, ...], Any]:
    """``{(k1, ..., k_depth): value}`` of a nested dict, the table metrics' leaves: ``count``
    and ``format`` entries left out."""
    if depth == 0:
        return {(): tree}
    return {(key, *rest): value
            for key, sub in tree.items() if key not in ("count", "format")
            for rest, value in _leaves(sub, depth - 1).items()}


def _rescore(path: Path, thinking: bool) -> dict[str, Any]:
    """``{source: {task: {metric, count}}}`` of a predictions file, by the scoring code alone."""
    items = read_predictions(path)
    return {source: score_predictions([i for i in items if i["source"] == source],
                                      thinking=thinking)[0]
            for source in sorted({i["source"] for i in items})}


def test_stage_writes_every_output_and_zero_deltas_for_equal_models(project,
                                                                    monkeypatch) -> None:
    from videorft.stages import evaluate

    params = project_params(
        project, "evaluate.models=[base, warm_start, trained]", "warm_start.enabled=false",
        f"evaluate.max_new_tokens={MAX_NEW_TOKENS}", "evaluate.batch_size=4",
    )
    assert params.evaluate.blind_control  # the default
    loads = Loads(monkeypatch)
    summary = evaluate.run(params, project)
    out = project / params.paths.evaluation
    val = load_split(project / params.paths.dataset, "val")
    assert summary["split"] == "val" and summary["items"] == len(val)
    assert summary["models"] == ["base", "trained"]  # warm start off: not evaluated
    assert set(summary["blind"]) == {"base", "trained"}
    assert len(loads.models) == 2  # each model loaded once for its real and its blind pass

    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["models", "blind", "delta", "reliance", "intervals", "bootstrap",
                             "split", "baseline", "target", "blind_control"]
    assert metrics["split"] == "val" and metrics["baseline"] == "base"
    assert metrics["target"] == "trained" and metrics["blind_control"] is True
    assert metrics["bootstrap"] == {"samples": 2000, "confidence": 0.95, "seed": 0,
                                    "unit": "item", "method": "percentile",
                                    "paired": "by item id"}
    assert set(metrics["models"]) == set(metrics["blind"]) == set(metrics["reliance"]) == {
        "base", "trained"}
    assert metrics["models"]["base"] == metrics["models"]["trained"]
    tasks = {row["task"] for row in val}
    assert set(metrics["models"]["trained"]["synthetic"]) == tasks
    deltas = [v for t in metrics["delta"]["synthetic"].values() for v in t.values()]
    assert deltas and all(v == 0 for v in deltas)

    # Every value has its interval, whose value is the metric itself (exactly); reliance and
    # delta are paired differences of those values.
    intervals = metrics["intervals"]
    assert list(intervals) == ["models", "blind", "reliance", "delta"]
    for kind in ("models", "blind"):
        for name in ("base", "trained"):
            values = _leaves(metrics[kind][name], 3)
            bounds = _leaves(intervals[kind][name], 3)
            assert values and set(bounds) == set(values)
            for key, value in values.items():
                assert bounds[key]["value"] == value, (kind, name, key)
                assert bounds[key]["low"] <= bounds[key]["high"]
                assert bounds[key]["low"] >= 0 and bounds[key]["high"] <= 1
    for name in ("base", "trained"):
        video, blind = _leaves(metrics["models"][name], 3), _leaves(metrics["blind"][name], 3)
        plain, bounds = _leaves(metrics["reliance"][name], 3), \
            _leaves(intervals["reliance"][name], 3)
        assert set(plain) == set(bounds) == set(video)
        for key in video:
            assert plain[key] == bounds[key]["value"] == video[key] - blind[key]
            assert bounds[key]["low"] <= bounds[key]["high"]
    delta_bounds = _leaves(intervals["delta"], 3)
    assert set(delta_bounds) == set(_leaves(metrics["delta"], 3))
    # Equal models: every paired difference is 0 on every item, so every interval is [0, 0].
    assert all(b == {"value": 0.0, "low": 0.0, "high": 0.0} for b in delta_bounds.values())

    # Re-scoring the predictions files with the scoring code alone gives metrics.json's values,
    # blind passes included; a single source, so `videorft score FILE` gives them too.
    thinking = params.build_dataset.thinking
    for name in ("base", "trained"):
        for kind, stem in (("models", name), ("blind", f"{name}-blind")):
            path = out / "predictions" / f"{stem}.jsonl"
            assert _rescore(path, thinking) == metrics[kind][name], stem
            assert score_file(path, thinking=thinking) == metrics[kind][name]["synthetic"]
            lines = list(read_jsonl(path))
            assert [line["id"] for line in lines] == [row["id"] for row in val]
            assert all(set(line) == {"id", "task", "source", "completion", "solution"}
                       for line in lines)
            assert fingerprint_path(path).is_file()

    items = list(read_jsonl(out / "items.jsonl"))
    assert len(items) == 4 * len(val)
    assert [i["model"] for i in items[:: len(val)]] == [
        "base", "base-blind", "trained", "trained-blind"]
    for name in ("base", "trained"):
        assert len(read_predictions(out / "predictions" / f"{name}.jsonl")) == len(val)
    table = (out / "table.md").read_text()
    assert "Δ (trained − base)" in table and "| synthetic |" in table
    rows = [line for line in table.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
    assert cells[0][3:7] == ["base", "base blind", "trained", "trained blind"]
    column = cells[0].index("Δ (trained − base)")
    assert {row[column] for row in cells[2:]} == {"+0.0 [+0.0, +0.0]"}
    assert "95% paired bootstrap interval over items" in table.splitlines()[-1]
    for name in ("iou_distribution.png", "metrics.png"):
        assert (out / "plots" / name).read_bytes()[:8] == PNG_MAGIC
    bars = json.loads((out / "plots" / "bars.json").read_text())
    assert {row["model"] for row in bars} == {"base", "base-blind", "trained", "trained-blind"}

    # A re-run with nothing new to predict loads no model and writes the same bytes.
    outputs = ("metrics.json", "table.md", "items.jsonl", "plots/bars.json", "plots/metrics.png")
    before = {name: (out / name).read_bytes() for name in outputs}
    _forbid_loading(monkeypatch)
    assert evaluate.run(params, project) == summary
    assert {name: (out / name).read_bytes() for name in outputs} == before

    # Without the blind control: no blind keys, the same model values, still no model loaded.
    params = project_params(
        project, "evaluate.models=[base, trained]", "warm_start.enabled=false",
        f"evaluate.max_new_tokens={MAX_NEW_TOKENS}", "evaluate.batch_size=4",
        "evaluate.blind_control=false",
    )
    assert "blind" not in evaluate.run(params, project)
    plain = json.loads((out / "metrics.json").read_text())
    assert "blind" not in plain and "reliance" not in plain
    assert list(plain["intervals"]) == ["models", "delta"]
    assert plain["models"] == metrics["models"] and plain["intervals"]["models"] == \
        intervals["models"]
    assert "blind" not in (out / "table.md").read_text().splitlines()[0]


def test_stage_split_and_caps(project) -> None:
    from videorft.stages import evaluate

    params = project_params(project, "evaluate.split=test")
    with pytest.raises(StageError, match=r"test\.jsonl not found"):
        evaluate.run(params, project)
    (project / params.paths.dataset / "val.jsonl").write_text("")
    params = project_params(project, "evaluate.split=auto")
    with pytest.raises(StageError, match="no rows to evaluate"):
        evaluate.run(params, project)

    rows = [{"id": f"{s}/{i}", "source": s} for s in ("b", "a") for i in (3, 1, 2)]
    capped = evaluate.cap_per_source(rows, 2)
    assert [r["id"] for r in capped] == ["a/1", "a/2", "b/1", "b/2"]
    assert len(evaluate.cap_per_source(rows, None)) == 6
