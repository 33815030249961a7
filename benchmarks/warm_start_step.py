"""Benchmark: warm-start (SFT) steps with the collator's row cache against processing every batch.

Builds a small project the way the default preset (`tiny-cpu`) does (synthetic temporal
grounding at 160x120, 4 s at 4 fps, frames at 2 fps, the default tiny model), then runs the same HF
``Trainer`` steps twice from the same seed: once with ``WarmStartCollator``'s cache off
(every batch through the processor, as before the cache) and once with it on, after one epoch
over the rows so the cached run measures the steady state a long warm start sees. The losses of
the two must be equal (the batches are), else the script exits 1 without a speedup line.

Run: .venv/bin/python benchmarks/warm_start_step.py [--rows 64] [--steps 100] [--batch 16]
Prints steps/s of each and ``cached_vs_uncached_speedup`` (uncached time / cached time).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRESET = ROOT / "configs" / "presets" / "tiny-cpu.yaml"


def build_project(root: Path, rows: int) -> tuple[Path, object]:
    from videorft.model.tiny import build_tiny_model
    from videorft.params import update_params
    from videorft.stages import get_stage

    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    source = ("download.sources=[{name: synthetic, type: synthetic, options: {seed: 0, "
              "tasks: [temporal_grounding], samples_per_task: {temporal_grounding: "
              f"{rows}}}, held_out: {{val: 0}}, width: 160, height: 120, fps: 4, "
              "min_duration_s: 4.0, max_duration_s: 4.0, time_bar: true}}]")
    params = update_params(root / "params.yaml", preset=str(DEFAULT_PRESET), overrides=[source])
    for stage in ("download", "extract_frames", "build_dataset"):
        get_stage(stage)(params, root)
    build_tiny_model(root / "tiny-model", seed=0)
    return root / "tiny-model", params


def run_steps(model_dir: Path, params, root: Path, *, steps: int, batch: int,
              cache: bool, trainer_class: type | None = None) -> tuple[float, list[float]]:
    """(seconds for `steps` optimiser steps, their losses); the cached run first fills its
    cache with one pass over the rows (not timed). ``trainer_class``: HF's ``Trainer`` unless
    given (benchmarks/warm_start_split.py passes ``LengthSplitTrainer``)."""
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    from videorft.model.loading import load_model_and_processor
    from videorft.trainer.data import load_split
    from videorft.trainer.sft import RowDataset, WarmStartCollator
    from videorft.video.store import FrameStore

    rows = load_split(root / params.paths.dataset, "train")
    model, processor = load_model_and_processor(model_dir, dtype="float32")
    collator = WarmStartCollator(processor, FrameStore(root / params.paths.frames),
                                 cache_bytes=2**34 if cache else 0)
    if cache:
        for start in range(0, len(rows), batch):
            collator(rows[start:start + batch])
    set_seed(0)
    model.train()
    trainer_class = trainer_class or Trainer
    args = TrainingArguments(
        output_dir=str(root / f"scratch-{cache}-{trainer_class.__name__}"), max_steps=steps,
        learning_rate=1e-3,
        per_device_train_batch_size=batch, seed=0, data_seed=0, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=True, remove_unused_columns=False,
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = trainer_class(model=model, args=args, train_dataset=RowDataset(rows),
                            data_collator=collator)
    trainer.remove_callback(PrinterCallback)  # the losses are compared, not printed
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return seconds, losses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="training videos")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per run")
    parser.add_argument("--batch", type=int, default=16, help="rows per step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as tmp:
        root = Path(tmp)
        model_dir, params = build_project(root, args.rows)
        plain, plain_losses = run_steps(model_dir, params, root, steps=args.steps,
                                        batch=args.batch, cache=False)
        cached, cached_losses = run_steps(model_dir, params, root, steps=args.steps,
                                          batch=args.batch, cache=True)
    print(f"threads: {torch.get_num_threads()}, rows: {args.rows}, batch: {args.batch}, "
          f"steps: {args.steps}")
    print(f"uncached: {args.steps / plain:.2f} steps/s; cached: {args.steps / cached:.2f} "
          "steps/s")
    if plain_losses != cached_losses:
        print("losses differ between the runs: the cached batches are not the same",
              file=sys.stderr)
        return 1
    print(f"cached_vs_uncached_speedup: {plain / cached:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
