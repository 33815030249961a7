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
     [--hidden 128 --layers 4] [--repeats 1]
Prints steps/s of each and ``split_vs_whole_speedup`` (whole time / split time; with
``--repeats``, pairs of runs in alternating order and the median of their ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
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
    add_repeats(parser)
    return checked(parser)


def add_repeats(parser: argparse.ArgumentParser) -> None:
    """``--repeats``: how many pairs of runs a comparison takes (see :func:`alternating`)."""
    parser.add_argument("--repeats", type=int, default=1,
                        help="pairs of runs, in alternating order; the ratio is their median")


def checked(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The parsed arguments; a ``--repeats`` below 1 is refused as argparse refuses options."""
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def alternating(repeats: int, baseline: Any, candidate: Any) -> Iterator[Any]:
    """The two ways in the order their runs go: the baseline first in even repeats, the
    candidate first in odd ones. A shared machine speeds up or slows down during a benchmark
    and the first run in a process may pay for warm-ups, so a fixed order could favour one
    way."""
    for repeat in range(repeats):
        yield from (baseline, candidate) if repeat % 2 == 0 else (candidate, baseline)


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
        seconds: dict[str, list[float]] = {baseline.name: [], candidate.name: []}
        losses: list[list[float]] = []
        for way in alternating(args.repeats, baseline, candidate):
            with way.context():
                took, run_losses = run_steps(model_dir, params, root, steps=args.steps,
                                             batch=args.batch, cache=True,
                                             trainer_class=way.trainer_class)
            seconds[way.name].append(took)
            losses.append(run_losses)
    print(f"threads: {torch.get_num_threads()}, tasks: {' '.join(tasks)}, rows per task: "
          f"{args.rows}, batch: {args.batch}, steps: {args.steps}, model: {args.hidden} wide, "
          f"{args.layers} layers, repeats: {args.repeats}")
    return compare_runs(args.steps, (baseline.name, seconds[baseline.name]),
                        (candidate.name, seconds[candidate.name]), losses, ratio_name, rel_tol)


def compare_runs(steps: int, baseline: tuple[str, list[float]],
                 candidate: tuple[str, list[float]], losses: list[list[float]],
                 ratio_name: str, rel_tol: float = 1e-4) -> int:
    """Print each pair's steps/s and time ratio, then ``ratio_name``: the median of the pairs'
    baseline time / candidate time, when every run trained the same (every step's loss within
    ``rel_tol`` relative of the first run's; 0: equal); the exit status (1: they did not, and
    no ratio is printed)."""
    median = print_pairs(steps, baseline, candidate)
    first = losses[0]
    for other in losses[1:]:
        if len(other) != len(first) or not all(
                math.isclose(a, b, rel_tol=rel_tol) for a, b in zip(first, other, strict=True)):
            print(f"the runs trained differently: losses {first[-3:]} vs {other[-3:]}",
                  file=sys.stderr)
            return 1
    print(f"{ratio_name}: {median:.2f}")
    return 0


def print_pairs(steps: int, baseline: tuple[str, list[float]],
                candidate: tuple[str, list[float]]) -> float:
    """Print each pair's steps/s and baseline time / candidate time; their median."""
    (base_name, base_times), (cand_name, cand_times) = baseline, candidate
    ratios = [b / c for b, c in zip(base_times, cand_times, strict=True)]
    for base_s, cand_s, ratio in zip(base_times, cand_times, ratios, strict=True):
        print(f"{base_name}: {steps / base_s:.2f} steps/s; {cand_name}: "
              f"{steps / cand_s:.2f} steps/s; ratio {ratio:.2f}")
    return statistics.median(ratios)


if __name__ == "__main__":
    sys.exit(main())
