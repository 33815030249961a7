"""Benchmark: multi-task warm-start steps run as micro-batches of similar length, against whole
left-padded batches.

Builds a small four-task project (synthetic temporal grounding, grounded QA, tracking and
multiple choice at 160x120, 4 s at 4 fps, frames at 2 fps; the default preset's scenes),
then runs the same HF ``Trainer`` steps twice from the same seed with the collator's row cache
filled: once with the stock ``Trainer`` (every row padded to the batch's longest: a tracking
answer is ~200 tokens, a temporal-grounding one 16) and once with ``LengthSplitTrainer``. The
two must train the same (every step's loss within 1e-4 relative), else the script exits 1
without a speedup line.

Run: .venv/bin/python benchmarks/warm_start_split.py [--rows 32] [--steps 40] [--batch 16]
     [--hidden 128 --layers 4]
Prints steps/s of each and ``split_vs_whole_speedup`` (whole time / split time).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from warm_start_step import run_steps  # this folder is on sys.path when run as a script

from videorft.trainer.micro_batches import LengthSplitTrainer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRESET = ROOT / "configs" / "presets" / "tiny-cpu.yaml"
TASKS = ("temporal_grounding", "grounded_qa", "tracking", "mcq")


def build_project(root: Path, rows: int, hidden: int, layers: int,
                  tasks: tuple[str, ...] = TASKS) -> tuple[Path, object]:
    from dataclasses import replace

    from videorft.model.tiny import build_tiny_model
    from videorft.model.tiny_spec import TinyModelSpec
    from videorft.params import update_params
    from videorft.stages import get_stage

    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    counts = ", ".join(f"{task}: {rows}" for task in tasks)
    source = ("download.sources=[{name: synthetic, type: synthetic, options: {seed: 0, "
              f"tasks: [{', '.join(tasks)}], samples_per_task: {{{counts}}}, "
              "held_out: {val: 0}, width: 160, height: 120, fps: 4, min_duration_s: 4.0, "
              "max_duration_s: 4.0, time_bar: true, canonical_options: true}}]")
    params = update_params(root / "params.yaml", preset=str(DEFAULT_PRESET), overrides=[
        source, f"build_dataset.tasks=[{', '.join(tasks)}]"])
    for stage in ("download", "extract_frames", "build_dataset"):
        get_stage(stage)(params, root)
    mrope = (hidden // 32, 3 * hidden // 64, 3 * hidden // 64)  # head_dim / 2: t, h, w
    spec = replace(TinyModelSpec(), hidden_size=hidden, num_hidden_layers=layers,
                   intermediate_size=2 * hidden, mrope_section=mrope)
    build_tiny_model(root / "tiny-model", spec=spec, seed=0)
    return root / "tiny-model", params


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="training videos per task")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per run")
    parser.add_argument("--batch", type=int, default=16, help="rows per step")
    parser.add_argument("--hidden", type=int, default=128, help="language-model width")
    parser.add_argument("--layers", type=int, default=4, help="language-model layers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ws-split-bench-") as tmp:
        root = Path(tmp)
        model_dir, params = build_project(root, args.rows, args.hidden, args.layers)
        whole, whole_losses = run_steps(model_dir, params, root, steps=args.steps,
                                        batch=args.batch, cache=True)
        split, split_losses = run_steps(model_dir, params, root, steps=args.steps,
                                        batch=args.batch, cache=True,
                                        trainer_class=LengthSplitTrainer)
    print(f"threads: {torch.get_num_threads()}, rows per task: {args.rows}, batch: "
          f"{args.batch}, steps: {args.steps}, model: {args.hidden} wide, {args.layers} layers")
    return compare_runs(args.steps, ("whole batches", whole, whole_losses),
                        ("micro-batches by length", split, split_losses),
                        "split_vs_whole_speedup")


def compare_runs(steps: int, baseline: tuple[str, float, list[float]],
                 candidate: tuple[str, float, list[float]], ratio_name: str) -> int:
    """Print each run's steps/s, then ``ratio_name: baseline time / candidate time`` when the
    two trained the same (every step's loss within 1e-4 relative); the exit status (1: they
    did not, and no ratio is printed)."""
    (base_name, base_s, base_losses), (cand_name, cand_s, cand_losses) = baseline, candidate
    print(f"{base_name}: {steps / base_s:.2f} steps/s; {cand_name}: {steps / cand_s:.2f} steps/s")
    same = len(base_losses) == len(cand_losses) and all(
        math.isclose(a, b, rel_tol=1e-4) for a, b in zip(base_losses, cand_losses, strict=True))
    if not same:
        print(f"the runs trained differently: losses {base_losses[-3:]} vs {cand_losses[-3:]}",
              file=sys.stderr)
        return 1
    print(f"{ratio_name}: {base_s / cand_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
