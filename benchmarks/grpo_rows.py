"""Benchmark: GRPO steps with each distinct prompt processed once and each row's rope positions
shared by the passes, against processing every row and indexing it in every pass.

TRL hands each prompt ``num_generations`` times, and every generation batch goes through up to
2 + ``num_iterations`` log-prob passes (old policy, reference, each loss iteration).
``VideoGRPOTrainer`` processes each distinct (prompt, video) once (``distinct_inputs``) and
computes each row's multimodal rope positions once per batch (``RowPositions``); before, every
row was processed and every pass ran Qwen2.5-VL's per-row ``get_rope_index`` again.

Builds a small project of the default preset's tasks (synthetic temporal grounding, grounded QA
and multiple choice at 160x120, 4 s at 4 fps, frames at 2 fps), the default tiny model and a
short warm start on it (``--warm-steps``, no curriculum: enough for answers in format, so the
rewards differ within groups), then runs the train stage's own GRPO (``train_grpo`` with the
default's ``train`` section, ``--steps`` steps) twice from the same seed: the old way, then as
the trainer runs now. The two runs must train the same bits (equal saved weights, which GRPO
must have changed), else the script exits 1 without a speedup line. With ``--repeats N`` the
pair runs N times, in alternating order (old-new, new-old, ...), so that a machine slowing down
or speeding up during the benchmark, as a shared VM does, does not favour either way.

Run: .venv/bin/python benchmarks/grpo_rows.py [--rows 32] [--steps 40] [--warm-steps 300]
[--repeats 1]
Prints steps/s of each and ``distinct_vs_every_row_speedup`` (old time / new time; with
repeats, each pair's ratio and their median).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from warm_start_split import (  # this folder is on sys.path when run as a script
    add_repeats,
    alternating,
    build_project,
    checked,
    print_pairs,
)

from videorft.model import row_positions
from videorft.stages import get_stage
from videorft.trainer import video_grpo

TASKS = ("temporal_grounding", "grounded_qa", "mcq")


@contextlib.contextmanager
def every_row() -> Iterator[None]:
    """The trainer as before: every row processed, every pass computing its rope index."""
    distinct, bind = video_grpo.distinct_inputs, row_positions.RowPositions.bind

    def all_distinct(texts, videos):
        return list(range(len(texts))), list(range(len(texts)))

    video_grpo.distinct_inputs = all_distinct
    row_positions.RowPositions.bind = lambda self, rope_index: rope_index
    try:
        yield
    finally:
        video_grpo.distinct_inputs, row_positions.RowPositions.bind = distinct, bind


def run(root: Path, params, model_dir: Path, name: str) -> tuple[float, bytes]:
    """(GRPO seconds, the saved weights' bytes) of one run into ``root/name``."""
    from videorft.trainer.grpo import train_grpo

    out = root / name
    summary = train_grpo(params, root, init_model=model_dir, checkpoints_dir=out / "checkpoints",
                         out_dir=out / "trained", metrics_dir=out / "metrics")
    return summary["train_runtime_s"], (out / "trained" / "model.safetensors").read_bytes()


def main() -> int:
    args = parse_args(__doc__)
    return compare_grpo(args, ("every row", every_row), "distinct",
                        "distinct_vs_every_row_speedup")


def parse_args(doc: str) -> argparse.Namespace:
    """The options of the GRPO comparisons; ``doc``: the calling script's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="training videos per task")
    parser.add_argument("--steps", type=int, default=40, help="GRPO optimiser steps per run")
    parser.add_argument("--warm-steps", type=int, default=300,
                        help="warm-start steps first, so GRPO's rewards are not all zero")
    add_repeats(parser)
    return checked(parser)


def compare_grpo(args: argparse.Namespace,
                 baseline: tuple[str, Callable[[], AbstractContextManager[Any]]],
                 candidate: str, ratio_name: str) -> int:
    """Build the project and its warm start, run GRPO inside ``baseline``'s context and as
    the trainer runs now (``args.repeats`` pairs, in :func:`alternating` order), and print the
    speeds and ``ratio_name`` when every run saved the same weights (and GRPO changed them);
    the exit status."""
    (base_name, context) = baseline
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        root = Path(tmp)
        _, params = build_project(root, args.rows, 64, 2, TASKS)
        warm = params.warm_start.model_copy(update={"max_steps": args.warm_steps,
                                                    "curriculum": [], "sources": None})
        train = params.train.model_copy(update={"max_steps": args.steps, "sources": None,
                                                "save_steps": args.steps,
                                                "logging_steps": args.steps})
        params = params.model_copy(update={"warm_start": warm, "train": train})
        for stage in ("base_model", "warm_start"):
            get_stage(stage)(params, root)
        model_dir = root / params.paths.warm_start
        start = (model_dir / "model.safetensors").read_bytes()
        old_times, new_times, weights = [], [], set()
        for index, way in enumerate(alternating(args.repeats, "old", "new")):
            with context() if way == "old" else contextlib.nullcontext():
                seconds, trained = run(root, params, model_dir, f"{way}-{index}")
            (old_times if way == "old" else new_times).append(seconds)
            weights.add(trained)
    print(f"threads: {torch.get_num_threads()}, tasks: {' '.join(TASKS)}, rows per task: "
          f"{args.rows}, steps: {args.steps}, G: {params.train.num_generations}, "
          f"iterations: {params.train.num_iterations}, repeats: {args.repeats}")
    median = print_pairs(args.steps, (base_name, old_times), (candidate, new_times))
    if start in weights:
        print("GRPO left the weights as they were: the runs cannot be compared", file=sys.stderr)
        return 1
    if len(weights) != 1:
        print("the runs trained different weights", file=sys.stderr)
        return 1
    print(f"{ratio_name}: {median:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
