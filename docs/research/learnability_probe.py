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
all), and ``gen``: variants of the synthetic scenes that
the generator does not offer as options yet, applied by replacing its private helpers in this
process only:

- ``fixed_s``: every video lasts this many seconds;
- ``aligned`` with ``max_len``: the target's span starts and ends on whole seconds, 1 to
  ``max_len`` seconds long, with at least a second before and after;
- ``size_scale``: shapes this many times larger;
- ``tg_distractors: [lo, hi]``: distractor count of temporal grounding and grounded QA;
- ``one_template``: one temporal-grounding query wording;
- ``time_bar``: a bar along the bottom of every frame whose length is the elapsed share of the
  video (a burned-in clock).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]


class _DistractorRng:
    """A scene's random generator whose distractor-count draws return the configured range."""

    def __init__(self, real: np.random.Generator, low: int, high: int):
        self.real, self.low, self.high = real, low, high

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def integers(self, low: int, high: int | None = None, *args: Any, **kwargs: Any) -> Any:
        if (low, high) in ((1, 4), (1, 3)):  # temporal grounding / grounded QA distractors
            return int(self.real.integers(self.low, self.high + 1))
        return self.real.integers(low, high, *args, **kwargs)


def patch_generator(gen: dict[str, Any]) -> None:
    """Apply the ``gen`` scene variants (module docstring) to the synthetic source."""
    import videorft.sources.synthetic as syn

    scene_init, scene_size, render = syn._Scene.__init__, syn._Scene.size, syn._render

    def init(self: Any, rng: Any, options: Any) -> None:
        scene_init(self, rng, options)
        if gen.get("fixed_s"):
            self.n = int(gen["fixed_s"] * self.fps)

    def appearance(self: Any) -> np.ndarray:
        rng = getattr(self.rng, "real", self.rng)
        length = int(rng.integers(1, int(gen.get("max_len", 4)) + 1))
        start = int(rng.integers(1, self.n // self.fps - length))
        visible = np.zeros(self.n, dtype=bool)
        visible[start * self.fps : (start + length) * self.fps] = True
        return visible

    def size(self: Any, lo: float = 0.14, hi: float = 0.22) -> int:
        return scene_size(self, lo * gen["size_scale"], hi * gen["size_scale"])

    def with_distractors(builder: Any) -> Any:
        low, high = gen["tg_distractors"]

        def build(scene: Any, index: int, position: int | None) -> Any:
            scene.rng = _DistractorRng(scene.rng, low, high)
            return builder(scene, index, position)

        return build

    def clock(sample: Any) -> Any:
        for i, frame in enumerate(render(sample)):
            height, width = frame.shape[0] * 2 // 3, frame.shape[1]
            bar, length = 2 * (height // 12), 2 * round((i + 1) / sample.n_frames * width / 2)
            frame = frame.copy()
            frame[height - bar : height, :length] = 235
            frame[height - bar : height, length:] = 16
            yield frame

    syn._Scene.__init__ = init
    if gen.get("aligned"):
        syn._Scene.appearance = appearance
    if "size_scale" in gen:
        syn._Scene.size = size
    if "tg_distractors" in gen:
        for task in ("temporal_grounding", "grounded_qa"):
            syn._BUILDERS[task] = with_distractors(syn._BUILDERS[task])
    if gen.get("one_template"):
        syn._TG_TEMPLATES = syn._TG_TEMPLATES[:1]
    if gen.get("time_bar"):
        syn._render = clock


def evaluate(root: Path, model_dir: Path, tag: str, max_new: int) -> None:
    """Greedy answers on val, with the video and blind; mean reward components per task."""
    from videorft.evaluation.blind import BlankFrames
    from videorft.model.generate import generate_answers
    from videorft.model.loading import load_model_and_processor
    from videorft.rewards import score
    from videorft.trainer.data import load_split
    from videorft.video.extract import FrameStore

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


def main(root: Path, config: dict[str, Any]) -> None:
    import torch

    from videorft.model.tiny import TinyModelSpec, build_tiny_model
    from videorft.params import _validate, deep_merge, load_raw, to_plain
    from videorft.stages import get_stage

    torch.set_num_threads(2)
    raw = deep_merge(to_plain(load_raw(REPO / "params.yaml")), config.get("params", {}))
    params = _validate(raw, "probe config")
    root.mkdir(parents=True, exist_ok=True)
    patch_generator(config.get("gen", {}))
    start = time.time()
    for stage in ("download", "extract_frames", "build_dataset"):
        began = time.time()
        print(stage, get_stage(stage)(params, root), round(time.time() - began, 1), flush=True)

    base = root / "models/base"
    build_tiny_model(base, spec=TinyModelSpec(**config.get("spec", {})), seed=0)
    max_new = int(config.get("max_new", 224))

    from videorft.trainer.sft import warm_start

    began = time.time()
    cap = config.get("warm_start_cap", {})
    ws_params = train_subset(params, root, "dataset_warm_start",
                             lambda row, i: i < cap.get(row["task"], 10**9)) if cap else params
    summary = warm_start(ws_params, root, base_model=base, out_dir=root / "models/warm_start",
                         eval_rows=0)
    print("warm_start", round(time.time() - began, 1), "s; loss", summary["loss_first"], "->",
          summary["loss_last"], flush=True)
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
