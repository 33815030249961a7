"""Benchmark: the GRPO loss pass (policy log-probs, forward + backward), shared prompt vs naive.

One group of G completions (default G=8, the usual ``num_generations``) of one video prompt of
~2000 tokens (1800 video tokens: 8 temporal x 15 x 15 merged patches, plus text) and
completions of 150-200 tokens (right-padded to 200), i.e. one loss micro-batch of
``VideoGRPOTrainer``:

  naive   ``plain_logps``: G full forwards in one batch, vision tower on G copies of the video
          (what the trainer does with ``shared_prompt=False``, and stock TRL's pass shape)
  shared  ``shared_prompt_logps``: the prompt and its video once, the G completions on the
          expanded key/value cache, gradients back through the cache

Both get TRL's fused LM head (``add_fused_lm_head``, as the trainer installs it) and the
same loss (sum of completion log-probs and 0.01 x entropies). Each is timed ``--repeats``
times, interleaved, after one warm-up of the shared path (same ops, cheap); the best time is
kept (the machine may be shared). The log-probs and entropies of the two are compared: they
must agree to float rounding, else the script exits 1 without a speedup line.

Default model: a random Qwen2.5-VL of 4.5 M parameters (text: 4 layers, width 256; vision: 2
blocks, width 64), float32 on CPU, so the script runs in 2-3 minutes on 2 cores. With a
GPU and a real checkpoint: ``--device cuda --dtype bfloat16 --model /path/Qwen2.5-VL-7B``
(add ``--checkpointing`` as the trainer does by default, to fit the naive pass in memory).

Then (unless ``--no-whole-step``) whole trainer steps of ``VideoGRPOTrainer`` on the same model
and video, shared prompt on and off (benchmarks/gpu_step.py's run): generation, log-prob
passes, backward and optimizer, with each phase's share of the step.

Run: .venv/bin/python benchmarks/grpo_step.py [--groups G] [--repeats N] [--checkpointing]
Prints shared_vs_naive_speedup (naive time / shared time, best runs), then
whole_step_speedup (plain step / shared step).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from trl.trainer.utils import add_fused_lm_head

from videorft.trainer.shared_prompt import plain_logps, shared_prompt_logps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_step import TINY, build_processor, run_config  # a sibling script

GRID = (8, 30, 30)  # temporal x height x width patches of 14 px: 16 frames of 420 x 420
TEXT_BEFORE, TEXT_AFTER = 20, 60  # chat scaffolding and question around the video
COMPLETION = 200


SIZES = TINY  # the benchmark model (4.5 M parameters), also used by the whole-step timing
VIDEO = {"frames": 16, "side": 420, "fps": 2.0}  # GRID's video, for the whole-step timing


def random_model(dtype: torch.dtype) -> Qwen2_5_VLForConditionalGeneration:
    """A small random Qwen2.5-VL: real architecture (mRoPE, window attention), toy sizes."""
    config = Qwen2_5_VLConfig(
        text_config={**SIZES["text_config"], "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 0},
        vision_config=SIZES["vision_config"],
        image_token_id=2044, video_token_id=2045, vision_start_token_id=2046,
        vision_end_token_id=2047, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).to(dtype)


def make_group(config: Any, groups: int, device: torch.device, dtype: torch.dtype,
               ) -> dict[str, Any]:
    """One prompt (text, video pads, text) x ``groups`` completions of 150..200 tokens."""
    generator = torch.Generator().manual_seed(0)
    t, h, w = GRID
    merge = config.vision_config.spatial_merge_size
    video_tokens = t * (h // merge) * (w // merge)
    text_ids = 1000  # ordinary token ids below this: no special tokens in the prompt

    def text(n: int) -> torch.Tensor:
        return torch.randint(2, text_ids, (n,), generator=generator)

    prompt = torch.cat([
        text(TEXT_BEFORE),
        torch.tensor([config.vision_start_token_id]),
        torch.full((video_tokens,), config.video_token_id),
        torch.tensor([config.vision_end_token_id]),
        text(TEXT_AFTER),
    ])
    lengths = torch.linspace(150, COMPLETION, groups).long()
    completion_mask = (torch.arange(COMPLETION) < lengths[:, None]).long()
    completions = torch.randint(2, text_ids, (groups, COMPLETION), generator=generator)
    completions = completions.masked_fill(completion_mask == 0, 0)
    input_ids = torch.cat([prompt.expand(groups, -1), completions], dim=1)
    attention_mask = torch.cat([torch.ones(groups, prompt.numel(), dtype=torch.long),
                                completion_mask], dim=1)
    patch = 3 * config.vision_config.temporal_patch_size * config.vision_config.patch_size ** 2
    pixels = torch.randn(t * h * w, patch, generator=generator).to(device, dtype)
    return {
        "input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device),
        "completion_mask": completion_mask.to(device),
        "pixels": [pixels] * groups,  # one tensor per row, as VideoBatch holds them
        "grid": torch.tensor([GRID] * groups, device=device),
        "time": torch.full((groups,), 0.5, device=device),
        "groups": torch.zeros(groups, dtype=torch.long, device=device),
        "prompt_tokens": prompt.numel(),
    }


def loss_pass(model: torch.nn.Module, batch: dict[str, Any], shared: bool,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward + backward of the loss pass; returns (log-probs, entropies), detached."""
    keep = batch["completion_mask"].size(1)
    common = {"video_grid_thw": batch["grid"], "second_per_grid_ts": batch["time"],
              "video_token_id": model.config.video_token_id, "compute_entropy": True}
    if shared:
        logps, entropy = shared_prompt_logps(
            model, batch["input_ids"], batch["attention_mask"], keep,
            group_ids=batch["groups"], pixel_values_videos=batch["pixels"], **common)
    else:
        logps, entropy, _ = plain_logps(
            model, batch["input_ids"], batch["attention_mask"], keep,
            pixel_values_videos=torch.cat(batch["pixels"]), **common)
    mask = batch["completion_mask"]
    ((logps * mask).sum() + 0.01 * (entropy * mask).sum()).backward()
    return logps.detach().float(), entropy.detach().float()


def timed(model: torch.nn.Module, batch: dict[str, Any], shared: bool, device: torch.device,
          ) -> tuple[float, float, tuple[torch.Tensor, torch.Tensor]]:
    """(wall seconds, CPU seconds of this process, outputs) of one loss pass."""
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    out = loss_pass(model, batch, shared)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--model", default=None, help="a Qwen2.5-VL checkpoint folder")
    parser.add_argument("--checkpointing", action="store_true",
                        help="non-reentrant gradient checkpointing (GRPOConfig's default)")
    parser.add_argument("--generation", choices=("eager", "static"), default="static",
                        help="KV cache of the whole step's generation (both paths): TRL's "
                        "dynamic one, or a preallocated one written in place")
    parser.add_argument("--no-whole-step", dest="whole_step", action="store_false",
                        help="skip the whole-trainer-step timing (random model only)")
    args = parser.parse_args(argv)
    if args.model:
        args.whole_step = False  # the whole step builds its own random model
    started = time.perf_counter()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.model:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=dtype)
    else:
        model = random_model(dtype)
    model.to(device).train()
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    if args.checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    batch = make_group(model.config, args.groups, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.model or 'random Qwen2.5-VL'} ({params / 1e6:.1f} M params, {args.dtype}, "
          f"{device}); cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()}")
    print(f"G={args.groups}, prompt {batch['prompt_tokens']} tokens "
          f"({batch['prompt_tokens'] - TEXT_BEFORE - TEXT_AFTER - 2} video), completions "
          f"{int(batch['completion_mask'].sum(1).min())}-{COMPLETION} tokens; checkpointing "
          f"{'on' if args.checkpointing else 'off'}; best of {args.repeats}")

    timed(model, batch, True, device)  # warm-up with the cheap path: it runs the same ops
    best = {"naive": float("inf"), "shared": float("inf")}
    cpu = dict(best)
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for _ in range(args.repeats):
        for name in ("naive", "shared"):
            seconds, cpu_seconds, outputs[name] = timed(model, batch, name == "shared", device)
            best[name] = min(best[name], seconds)
            cpu[name] = min(cpu[name], cpu_seconds)
    mask = batch["completion_mask"].bool()
    logp_gap = (outputs["naive"][0] - outputs["shared"][0])[mask].abs().max().item()
    entropy_gap = (outputs["naive"][1] - outputs["shared"][1])[mask].abs().max().item()

    length = batch["input_ids"].size(1)
    prompt, groups = batch["prompt_tokens"], args.groups
    tokens = {"naive": groups * length, "shared": (prompt - 1) + groups * (COMPLETION + 1)}
    print()
    header = (f"{'path':<8} {'videos':>6} {'LM tokens':>9} {'seconds':>8} {'x naive':>8} "
              f"{'cpu s':>7} {'cpu x naive':>11}")
    print(header)
    print("-" * len(header))
    for name, videos in (("naive", groups), ("shared", 1)):
        print(f"{name:<8} {videos:>6} {tokens[name]:>9} {best[name]:>8.2f} "
              f"{best['naive'] / best[name]:>8.2f} {cpu[name]:>7.2f} "
              f"{cpu['naive'] / cpu[name]:>11.2f}")
    print()
    print("seconds = wall time of forward + backward (best run); cpu s = CPU time of this\n"
          "process (all threads), less sensitive to other load on the machine.")
    print(f"max |log-prob naive - shared| over completion tokens: {logp_gap:.2e}; "
          f"entropy: {entropy_gap:.2e}")
    print(f"total {time.perf_counter() - started:.1f} s")
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    if not logp_gap < tolerance:
        print(f"log-probs disagree (> {tolerance})", file=sys.stderr)
        return 1
    print(f"shared_vs_naive_speedup: {best['naive'] / best['shared']:.2f}")
    if args.whole_step:
        whole_step(args.groups, device, dtype, args.checkpointing, args.generation)
    return 0


def whole_step(groups: int, device: torch.device, dtype: torch.dtype,
               checkpointing: bool, generation: str) -> None:
    """Whole trainer steps (generation, log-prob passes, backward, optimizer), shared vs plain.

    The same VideoGRPOTrainer run as benchmarks/gpu_step.py, with this benchmark's model sizes
    and video, completions of exactly COMPLETION tokens, one warm-up and one timed step each.
    """
    processor = build_processor()
    results = {}
    for shared in (True, False):
        results[shared] = run_config(
            sizes=SIZES, video=VIDEO, processor=processor, shared=shared, completion=COMPLETION,
            groups=groups, warmup=1, steps=1, device=device, dtype=dtype, peak_tflops=1.0,
            checkpointing=checkpointing, generation=generation)
    print()
    print(f"whole trainer step (G={groups}, {COMPLETION}-token completions, {generation} "
          "generation): seconds and share")
    for shared, result in results.items():
        step = result["seconds_per_step"]
        shares = ", ".join(f"{name} {seconds:.2f} ({100 * seconds / step:.0f}%)"
                           for name, seconds in result["phase_seconds"].items())
        print(f"{'shared' if shared else 'plain':<8} {step:6.2f} s: {shares}")
    speedup = results[False]["seconds_per_step"] / results[True]["seconds_per_step"]
    print(f"whole_step_speedup: {speedup:.2f}")


if __name__ == "__main__":
    sys.exit(main())
