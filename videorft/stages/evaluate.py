"""Stage `evaluate`: greedy answers of each model on the held-out split, scored by the
training rewards' rules, compared with the baseline (the paper's Table 1).

Outputs under ``paths.evaluation``:

- ``predictions/<model>.jsonl`` (+ ``.fingerprint.json``): raw answers in ``videorft score``'s
  format. DVC persists this folder, so an interrupted evaluation resumes and a retrained
  ``trained`` does not make the base model answer again (see
  :mod:`videorft.evaluation.predict`). With ``evaluate.blind_control``, also
  ``predictions/<model>-blind.jsonl``: the same model on the same items with blank frames
  (:mod:`videorft.evaluation.blind`), from the same loaded model.
- ``metrics.json``, the DVC metrics file (``dvc metrics show/diff`` flatten the nesting)::

      {"models":   {model: {source: {task: {metric: value, "format": share, "count": n}}}},
       "blind":    {model: ... same shape, the blind predictions' scores},
       "delta":    {source: {task: {metric: trained - baseline}}},
       "reliance": {model: {source: {task: {metric: video - blind}}}},
       "intervals": {"models": {model: {source: {task: {metric: {value, low, high}}}}},
                     "blind": ..., "reliance": ..., "delta": {source: ...}},
       "bootstrap": {samples, confidence, seed, ...},
       "split", "baseline", "target", "blind_control"}

  ``models`` is exactly what ``videorft score predictions/<model>.jsonl`` gives per source, and
  ``blind`` what it gives for ``<model>-blind.jsonl``; the intervals are paired bootstrap
  intervals over items (:mod:`videorft.evaluation.intervals`).
- ``items.jsonl``: one line per model (blind passes as ``<model>-blind``) and item (id, task,
  source, format, iou, accuracy).
- ``table.md``: the comparison table; ``plots/``: IoU ECDFs, the headline metrics with their
  intervals and blind values (``metrics.png``), and ``bars.json`` (rows for a DVC
  ``bar_horizontal`` plot).

Every item is scored exactly as ``videorft score`` would score the predictions file: the line
is validated by :func:`parse_prediction`, then :func:`score_item` applies the reward rules.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from videorft.errors import StageError
from videorft.evaluation.blind import blind_name
from videorft.evaluation.intervals import Bootstrap, evaluation_intervals
from videorft.evaluation.report import (
    bars_table,
    compare,
    plot_iou_distribution,
    plot_metrics,
    table_from_report,
)
from videorft.evaluation.scoring import (
    EXTRA_KEYS,
    aggregate,
    parse_prediction,
    score_item,
)
from videorft.io import atomic_open, atomic_write_text, read_jsonl
from videorft.params import Params

log = logging.getLogger(__name__)

TARGET = "trained"


def choose_split(params: Params, root: Path) -> str:
    """``evaluate.split``; ``auto``: test when build_dataset wrote test rows, else val."""
    split = params.evaluate.split
    if split != "auto":
        return split
    test = root / params.paths.dataset / "test.jsonl"
    if test.is_file() and any(True for _ in read_jsonl(test)):
        return "test"
    return "val"


def cap_per_source(rows: list[dict[str, Any]], cap: int | None) -> list[dict[str, Any]]:
    """At most ``cap`` rows per source, the first by id (deterministic), in id order."""
    rows = sorted(rows, key=lambda r: r["id"])
    if cap is None:
        return rows
    taken: dict[str, int] = defaultdict(int)
    kept = []
    for row in rows:
        source = row.get("source")
        if taken[source] < cap:
            taken[source] += 1
            kept.append(row)
    return kept


def load_rows(params: Params, root: Path, split: str) -> list[dict[str, Any]]:
    from videorft.trainer.data import load_split

    dataset = root / params.paths.dataset
    try:
        rows = load_split(dataset, split)
    except FileNotFoundError as exc:
        raise StageError(
            f"evaluate: {dataset / (split + '.jsonl')} not found (evaluate.split={split!r}; "
            "run build_dataset, or choose a split it writes)"
        ) from exc
    rows = cap_per_source(rows, params.evaluate.max_samples_per_source)
    if not rows:
        raise StageError(
            f"evaluate: {dataset / (split + '.jsonl')} has no rows to evaluate; hold out data "
            "(build_dataset.val_fraction > 0, or a source with split: test)"
        )
    return rows


def models_to_evaluate(params: Params) -> list[str]:
    """``evaluate.models`` in table order; the baseline is added (first) if not listed, since
    the deltas and the publish gate need it; ``warm_start`` is left out when the warm start is
    off (it would only repeat the base model), unless it is the baseline."""
    cfg = params.evaluate
    models = list(cfg.models)
    if cfg.baseline not in models:
        log.info("evaluate: baseline %r is not in evaluate.models; evaluating it too",
                 cfg.baseline)
        models.insert(0, cfg.baseline)
    if "warm_start" in models and not params.warm_start.enabled and cfg.baseline != "warm_start":
        log.info("evaluate: warm_start is disabled (it passes the base model on); skipping it")
        models.remove("warm_start")
    return models


def model_path(params: Params, root: Path, name: str) -> str:
    """What to load for a model name: a folder (or hub snapshot) path."""
    from videorft.model.base import resolve_model

    if name == "trained":
        return str(root / params.paths.trained)
    folder = params.paths.base_model if name == "base" else params.paths.warm_start
    try:
        return resolve_model(Path(folder), root)
    except FileNotFoundError as exc:
        raise StageError(f"evaluate: model {name!r}: {exc}") from exc


def score_predictions(
    predictions: list[dict[str, Any]], rows: list[dict[str, Any]], file: str
) -> list[dict[str, Any]]:
    """Per-item scores, as ``videorft score`` computes them from the predictions file."""
    thinking = {row["id"]: bool(row["thinking"]) for row in rows}
    scored = []
    for number, line in enumerate(predictions, start=1):
        item = parse_prediction(line, line=number, file=file)
        scored.append(score_item(item, thinking=thinking[item["id"]]))
    return scored


def aggregate_by_source(scored: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{source: {task: {metric: value, count}}}``, sources sorted."""
    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in scored:
        by_source[str(item.get("source"))].append(item)
    return {source: aggregate(by_source[source]) for source in sorted(by_source)}


def headline(per_source: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """``{"source/task/metric": value}`` rounded for the stage summary."""
    return {
        f"{source}/{task}/{metric}": round(value, 4)
        for source, tasks in per_source.items()
        for task, values in tasks.items()
        for metric, value in values.items()
        if metric not in EXTRA_KEYS
    }


def reliance(metrics: dict[str, dict], blind: dict[str, dict]) -> dict[str, Any]:
    """``{model: {source: {task: {metric: video - blind}}}}`` for every model with a blind
    pass (positive: the score needs the video)."""
    return {
        name: compare({"video": metrics[name], "blind": blind[name]}, "blind", "video")
        for name in metrics if name in blind
    }


def run(params: Params, root: Path) -> dict[str, Any]:
    from videorft.evaluation.predict import LazyModel, predict
    from videorft.video.store import FrameStore

    root = Path(root)
    cfg = params.evaluate
    out_dir = root / params.paths.evaluation
    split = choose_split(params, root)
    rows = load_rows(params, root, split)
    store = FrameStore(root / params.paths.frames)
    models = models_to_evaluate(params)
    log.info("evaluate: %d %s items, models %s%s", len(rows), split, ", ".join(models),
             " (each also blind)" if cfg.blind_control else "")

    metrics: dict[str, dict[str, Any]] = {}
    blind: dict[str, dict[str, Any]] = {}
    per_item: dict[str, list[dict[str, Any]]] = {}
    blind_items: dict[str, list[dict[str, Any]]] = {}
    settings = {"max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size,
                "dtype": params.model.dtype,
                "attn_implementation": params.model.attn_implementation}
    for name in models:
        model = model_path(params, root, name)
        # One load (at most) for both passes: the model is loaded when a pass needs it.
        with LazyModel(model, dtype=settings["dtype"],
                       attn_implementation=settings["attn_implementation"]) as loaded:
            path = out_dir / "predictions" / f"{name}.jsonl"
            predictions = predict(model, rows, store, path, loaded=loaded, **settings)
            per_item[name] = score_predictions(predictions, rows, str(path))
            metrics[name] = aggregate_by_source(per_item[name])
            if cfg.blind_control:
                path = out_dir / "predictions" / f"{blind_name(name)}.jsonl"
                predictions = predict(model, rows, store, path, loaded=loaded, blind=True,
                                      **settings)
                blind_items[name] = score_predictions(predictions, rows, str(path))
                blind[name] = aggregate_by_source(blind_items[name])

    boot = Bootstrap(**cfg.bootstrap.model_dump())
    try:
        intervals = evaluation_intervals(per_item, blind_items, baseline=cfg.baseline,
                                         target=TARGET, boot=boot)
    except ValueError as exc:  # the stage predicts every model on the same rows: a bug
        raise StageError(f"evaluate: {out_dir / 'predictions'}: {exc}") from exc
    report: dict[str, Any] = {"models": metrics}
    if cfg.blind_control:
        report["blind"] = blind
    report["delta"] = compare(metrics, cfg.baseline, TARGET)
    if cfg.blind_control:
        report["reliance"] = reliance(metrics, blind)
    report.update({"intervals": intervals, "bootstrap": boot.settings(), "split": split,
                   "baseline": cfg.baseline, "target": TARGET,
                   "blind_control": cfg.blind_control})
    # Not atomic_write_json: it sorts keys, and table order (models, TASKS, METRICS) reads better.
    atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    with atomic_open(out_dir / "items.jsonl", "w") as handle:
        for name in models:
            passes = [(name, per_item[name])]
            if name in blind_items:
                passes.append((blind_name(name), blind_items[name]))
            for label, items in passes:
                for item in items:
                    handle.write(json.dumps({"model": label, **item}, ensure_ascii=False) + "\n")
    table = table_from_report(report)
    atomic_write_text(out_dir / "table.md", table)
    plots = out_dir / "plots"
    plot_iou_distribution(per_item, plots / "iou_distribution.png")
    plot_metrics(metrics, models, plots / "metrics.png", intervals=intervals, blind=blind,
                 confidence=boot.confidence)
    atomic_write_text(plots / "bars.json",
                      json.dumps(bars_table(metrics, models, blind), indent=2) + "\n")
    summary: dict[str, Any] = {
        "split": split,
        "items": len(rows),
        "models": models,
        "headline": {name: headline(metrics[name]) for name in models},
        "table": table,  # the orchestrator's artifact (markdown)
    }
    if cfg.blind_control:
        summary["blind"] = {name: headline(blind[name]) for name in models}
    return summary
