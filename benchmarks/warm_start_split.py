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
import contextlib
import math
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    args = parse_args(__doc__, default_steps=40, default_hidden=128, default_layers=4)
    return compare_ways(args, TASKS, Way("whole batches", None),
                        Way("micro-batches by length", LengthSplitTrainer),
                        "split_vs_whole_speedup")


def parse_args(doc: str, *, default_steps: int, default_hidden: int = 64,
               default_layers: int = 2,
               default_tasks: tuple[str, ...] | None = None) -> argparse.Namespace:
    """The options every warm-start comparison takes (``--tasks`` where a default is given);
    ``doc``: the calling script's docstring, whose first line describes it."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="training videos per task")
    parser.add_argument("--steps", type=int, default=default_steps, help="optimiser steps per run")
    parser.add_argument("--batch", type=int, default=16, help="rows per step")
    parser.add_argument("--hidden", type=int, default=default_hidden, help="language-model width")
    parser.add_argument("--layers", type=int, default=default_layers, help="language-model layers")
    if default_tasks is not None:
        parser.add_argument("--tasks", nargs="+", default=list(default_tasks))
    return parser.parse_args()


@dataclass(frozen=True)
class Way:
    """One side of a comparison: its name, its trainer class (None: HF's ``Trainer``) and a
    context the model is loaded and trained in."""

    name: str
    trainer_class: type | None
    context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext


def compare_ways(args: argparse.Namespace, tasks: tuple[str, ...], baseline: Way,
                 candidate: Way, ratio_name: str, rel_tol: float = 1e-4) -> int:
    """Build one project of ``tasks``, run the same warm-start steps both ways from the same
    seed with the row cache filled, and print :func:`compare_runs`'s lines."""
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as tmp:
        root = Path(tmp)
        model_dir, params = build_project(root, args.rows, args.hidden, args.layers, tasks)
        runs = []
        for way in (baseline, candidate):
            with way.context():
                seconds, losses = run_steps(model_dir, params, root, steps=args.steps,
                                            batch=args.batch, cache=True,
                                            trainer_class=way.trainer_class)
            runs.append((way.name, seconds, losses))
    print(f"threads: {torch.get_num_threads()}, tasks: {' '.join(tasks)}, rows per task: "
          f"{args.rows}, batch: {args.batch}, steps: {args.steps}, model: {args.hidden} wide, "
          f"{args.layers} layers")
    return compare_runs(args.steps, runs[0], runs[1], ratio_name, rel_tol)


def compare_runs(steps: int, baseline: tuple[str, float, list[float]],
                 candidate: tuple[str, float, list[float]], ratio_name: str,
                 rel_tol: float = 1e-4) -> int:
    """Print each run's steps/s, then ``ratio_name: baseline time / candidate time`` when the
    two trained the same (every step's loss within ``rel_tol`` relative; 0: equal); the exit
    status (1: they did not, and no ratio is printed)."""
    (base_name, base_s, base_losses), (cand_name, cand_s, cand_losses) = baseline, candidate
    print(f"{base_name}: {steps / base_s:.2f} steps/s; {cand_name}: {steps / cand_s:.2f} steps/s")
    same = len(base_losses) == len(cand_losses) and all(
        math.isclose(a, b, rel_tol=rel_tol) for a, b in zip(base_losses, cand_losses, strict=True))
    if not same:
        print(f"the runs trained differently: losses {base_losses[-3:]} vs {cand_losses[-3:]}",
              file=sys.stderr)
        return 1
    print(f"{ratio_name}: {base_s / cand_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
