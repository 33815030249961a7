"""Learnability probe for issue 10: does the tiny model answer from the video?

How to run (from the repository root, with the project's virtualenv active)::

    python docs/research/learnability_probe.py /tmp/probe-r12 docs/research/probes/e12.json

A research tool, not a pipeline stage: it runs the real stage code (download, extract_frames,
build_dataset), builds a tiny model of the config's ``spec``, runs the warm start and, with
``"grpo": true``, GRPO, then answers the val split greedily with the video and blind (all
frames zero) and prints the reward components per task. The results in
docs/research/rft-miniature.md come from these configs (``probes/``).

Config keys: ``params`` (an overlay on params.yaml), ``spec`` (TinyModelSpec fields),
``max_new`` (answer tokens), ``grpo`` (bool), ``warm_start_cap`` (``{task: n}``: the warm start
sees at most n train rows of that task), ``grpo_tasks`` (the tasks GRPO trains on; default
all), ``reuse_warm_start`` (keep an existing ``models/warm_start``), and ``gen``: scene
variants, written into the synthetic source's options (``videorft.sources.synthetic``):

- ``fixed_s``: every video lasts this many seconds (``min/max_duration_s``);
- ``aligned`` with ``min_len``/``max_len``: the target's span starts and ends on multiples
  of ``grid`` seconds (default 1; ``span_grid_s``), ``min_len`` (default 1) to ``max_len``
  seconds long, with at least a second before and after (``edges``: it may also touch the
  start or the end);
- ``size_scale``: shapes this many times larger (``shape_scale``);
- ``tg_distractors: [lo, hi]``: at most ``hi`` distractors (``max_distractors``);
- ``time_bar``: the generator's clock bar;
- ``one_template``: one temporal-grounding query wording (``wordings: 1``; the same
  scenes and sentences as the earlier in-process patch of the template list).

Runs r1-r25 of the research log ran with an earlier version of this script that patched the
generator instead; the scenes are the same kind, not the same bytes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def gen_options(gen: dict[str, Any]) -> dict[str, Any]:
    """The synthetic source options for the ``gen`` scene variants (module docstring)."""
    options: dict[str, Any] = {}
    if gen.get("fixed_s"):
        options.update(min_duration_s=gen["fixed_s"], max_duration_s=gen["fixed_s"])
    if gen.get("aligned"):
        options.update(span_grid_s=float(gen.get("grid", 1)),
                       min_span_s=float(gen.get("min_len", 1)),
                       max_span_s=float(gen.get("max_len", 4)),
                       span_margin_s=0.0 if gen.get("edges") else 1.0)
    if "size_scale" in gen:
        options["shape_scale"] = gen["size_scale"]
    if "tg_distractors" in gen:
        options["max_distractors"] = gen["tg_distractors"][1]
    if gen.get("time_bar"):
        options["time_bar"] = True
    if gen.get("one_template"):
        options["wordings"] = 1
    return options


def with_gen(raw: dict[str, Any], gen: dict[str, Any]) -> dict[str, Any]:
    """``raw`` params whose synthetic sources carry the ``gen`` variants."""
    for source in raw["download"]["sources"]:
        if source["type"] == "synthetic":
            source["options"] = {**source.get("options", {}), **gen_options(gen)}
    return raw


def evaluate(root: Path, model_dir: Path, tag: str, max_new: int) -> None:
    """Greedy answers on val, with the video and blind; mean reward components per task."""
    from videorft.evaluation.blind import BlankFrames
    from videorft.model.generate import generate_answers
    from videorft.model.loading import load_model_and_processor
    from videorft.rewards import score
    from videorft.trainer.data import load_split
    from videorft.video.store import FrameStore

    model, processor = load_model_and_processor(str(model_dir), dtype="float32")
    rows = load_split(root / "data/dataset", "val")
    store = FrameStore(root / "data/frames")
    for name, frames in (("video", store), ("blind", BlankFrames(store))):
        answers = generate_answers(model, processor, rows, frames, max_new_tokens=max_new,
                                   batch_size=64)
        result = {}
        for task in sorted({row["task"] for row in rows}):
            scores = [score(answer, row["task"], row["solution"], thinking=False)
                      for answer, row in zip(answers, rows, strict=True) if row["task"] == task]
            result[task] = {key: round(float(np.mean([s[key] for s in scores])), 3)
                            for key in scores[0]}
        print(tag, name, result, flush=True)
        if name == "video":
            for answer, row in list(zip(answers, rows, strict=True))[:4]:
                print("   ", row["task"], repr(answer[:120]), row["solution"])


def train_subset(params: Any, root: Path, name: str, keep: Any) -> Any:
    """``params`` reading its train split from ``data/<name>/train.jsonl``: the rows of the
    real train split for which ``keep(row, index_within_task)`` holds (val is copied)."""
    import shutil
    from collections import Counter

    from videorft.io import write_jsonl
    from videorft.trainer.data import load_split

    folder = root / "data" / name
    folder.mkdir(parents=True, exist_ok=True)
    seen: Counter[str] = Counter()
    rows = []
    for row in load_split(root / params.paths.dataset, "train"):
        if keep(row, seen[row["task"]]):
            rows.append(row)
        seen[row["task"]] += 1
    write_jsonl(folder / "train.jsonl", rows)
    shutil.copy(root / params.paths.dataset / "val.jsonl", folder / "val.jsonl")
    print(name, dict(Counter(r["task"] for r in rows)), flush=True)
    paths = params.paths.model_copy(update={"dataset": f"data/{name}"})
    return params.model_copy(update={"paths": paths})


def run_warm_start(params: Any, root: Path, config: dict[str, Any], base: Path) -> None:
    """The warm start of ``base`` into ``models/warm_start`` (capped per ``warm_start_cap``)."""
    from videorft.trainer.sft import warm_start

    began = time.time()
    cap = config.get("warm_start_cap", {})
    ws_params = train_subset(params, root, "dataset_warm_start",
                             lambda row, i: i < cap.get(row["task"], 10**9)) if cap else params
    summary = warm_start(ws_params, root, base_model=base, out_dir=root / "models/warm_start",
                         eval_rows=0)
    print("warm_start", round(time.time() - began, 1), "s; loss", summary["loss_first"], "->",
          summary["loss_last"], flush=True)


def main(root: Path, config: dict[str, Any]) -> None:
    import torch

    from videorft.model.tiny import TinyModelSpec, build_tiny_model
    from videorft.params import _validate, deep_merge, load_raw, to_plain
    from videorft.stages import get_stage

    torch.set_num_threads(2)
    raw = deep_merge(to_plain(load_raw(REPO / "params.yaml")), config.get("params", {}))
    params = _validate(with_gen(raw, config.get("gen", {})), "probe config")
    root.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for stage in ("download", "extract_frames", "build_dataset"):
        began = time.time()
        print(stage, get_stage(stage)(params, root), round(time.time() - began, 1), flush=True)

    base = root / "models/base"
    build_tiny_model(base, spec=TinyModelSpec(**config.get("spec", {})), seed=0)
    max_new = int(config.get("max_new", 224))
    if config.get("reuse_warm_start") and (root / "models/warm_start").is_dir():
        print("warm_start reused", flush=True)
    else:
        run_warm_start(params, root, config, base)
    evaluate(root, root / "models/warm_start", "ws", max_new)

    if config.get("grpo"):
        from videorft.trainer.grpo import train_grpo

        began = time.time()
        tasks = config.get("grpo_tasks")
        grpo_params = train_subset(params, root, "dataset_grpo",
                                   lambda row, i: row["task"] in tasks) if tasks else params
        train_grpo(grpo_params, root, init_model=root / "models/warm_start",
                   checkpoints_dir=root / "models/checkpoints", out_dir=root / "models/trained",
                   metrics_dir=root / "reports/train")
        print("grpo", round(time.time() - began, 1), "s", flush=True)
        evaluate(root, root / "models/trained", "grpo", max_new)
    print("total", round(time.time() - start, 1), "s")


if __name__ == "__main__":  # extract_frames spawns workers: the guard is required
    main(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))
