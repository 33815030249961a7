"""Time one warm-start (SFT) step of the default tiny model: where could the budget come from?

How to run (from the repository root, with the project's virtualenv active)::

    python docs/research/step_cost.py [--batch 16] [--steps 40] \
        [--way eager|compile|linear-patch-embed] [--profile]

Builds a throw-away project of 64 synthetic temporal-grounding videos the way the default
preset does (benchmarks/warm_start_step.py's ``build_project``), takes its first batches
through the warm start's collator, and times ``--steps`` optimiser steps (forward, backward,
AdamW) after three warm-up steps. ``--way compile`` wraps the model in ``torch.compile``
(dynamic shapes) and reports the warm-up, which holds the compilation; ``linear-patch-embed``
computes the vision tower's patch embedding (a Conv3d whose kernel equals its stride) as one
matrix product with the same weights, which changes the round-off. ``--profile`` prints the
top operators of five more steps. Threads: set ``OMP_NUM_THREADS``; two runs side by side at
``OMP_NUM_THREADS=1 --batch 8`` stand for two data-parallel processes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def linear_patch_embed(patch_embed: torch.nn.Module) -> None:
    """The patch embedding as ``F.linear`` over the flattened patches (same weights)."""
    weight = patch_embed.proj.weight

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        flat = hidden_states.to(weight.dtype).reshape(-1, weight[0].numel())
        return torch.nn.functional.linear(flat, weight.reshape(weight.shape[0], -1),
                                          patch_embed.proj.bias)

    patch_embed.forward = forward


def main() -> None:
    from warm_start_step import build_project

    from videorft.model.loading import load_model_and_processor
    from videorft.trainer.data import load_split
    from videorft.trainer.sft import WarmStartCollator
    from videorft.video.store import FrameStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--way", choices=("eager", "compile", "linear-patch-embed"),
                        default="eager")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="step-cost-"))
    try:
        model_dir, params = build_project(tmp, 64)
        rows = load_split(tmp / params.paths.dataset, "train")
        model, processor = load_model_and_processor(model_dir, dtype="float32")
        collator = WarmStartCollator(processor, FrameStore(tmp / params.paths.frames),
                                     cache_bytes=2**34)
        batches = [collator(rows[s:s + args.batch]) for s in range(0, len(rows), args.batch)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.train()
    if args.way == "linear-patch-embed":
        linear_patch_embed(model.model.visual.patch_embed)
    forward = torch.compile(model, dynamic=True) if args.way == "compile" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(index: int) -> None:
        forward(**batches[index % len(batches)]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    started = time.perf_counter()
    for index in range(3):
        step(index)
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    for index in range(args.steps):
        step(index)
    per_step = (time.perf_counter() - started) / args.steps
    print(f"way {args.way}, batch {args.batch}, threads {torch.get_num_threads()}: "
          f"warm-up {warm_up:.1f} s, {per_step * 1000:.1f} ms/step")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for index in range(5):
                step(index)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":  # extraction spawns worker processes
    main()
