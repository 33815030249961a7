"""GPU check: whole GRPO steps of a random Qwen2.5-VL-7B on one GPU, shared prompt vs plain.

What it runs: ``VideoGRPOTrainer`` (the project's trainer, not a copy) on a randomly initialised
Qwen2.5-VL with the published 7B architecture (:data:`QWEN25_VL_7B`, copied from
Qwen/Qwen2.5-VL-7B-Instruct's config.json: no weights are needed, none are downloaded) in
bfloat16, at the paper's budget: G = 8 completions of one prompt per step, a 16-frame video of
420 x 420 frames (8 x 15 x 15 = 1,800 video tokens, the 3584 x 28 x 28 pixel budget), and
completions of exactly ``--completion`` tokens (``min_new_tokens`` = cap: random weights never
stop early). Full fine-tuning, AdamW, gradient checkpointing (non-reentrant), beta 0.04 (so a
reference pass runs), SDPA attention. Each configuration (completion length x generation,
eager or compiled, x shared prompt on / off) runs ``--warmup`` untimed steps and ``--steps``
timed ones. ``--zero3`` runs the same steps under DeepSpeed ZeRO-3 in one process instead (toy
sizes, float32) and compares the first policy log-probs with the shared prompt on and off.

Printed per configuration: seconds per step and per phase (generation; log-prob passes without
grad, i.e. reference/old policy; policy forward; backward; optimizer; the rest), generated
tokens per second, peak GPU memory, the MFU of the log-prob and backward passes, and
``gpu_seconds_per_prompt_group``. MFU counts the *useful* model FLOPs of those passes: 2 x
parameters per token forward and 4 x backward, over each group's prompt and video once plus its
completions (the plain path computes the prompt G times, which is what lowers its MFU);
attention-score FLOPs and checkpointing's recomputation are not counted. Peak: 989 TFLOP/s
(dense bf16 of an H100/H200 SXM), ``--peak-tflops`` for other chips.

Tokenizer and processor: the project's offline Qwen2 tokenizer (the embedded tiny model's,
same pre-tokenizer and chat template, a smaller vocabulary), with the 7B's 152,064-row
embedding: sampled ids beyond the tokenizer decode to nothing, which changes no tensor shape.
The reference model is the random policy built again from the same seed (TRL would re-load it
from the policy's folder, which a random model does not have).

Run (GPU): python benchmarks/gpu_step.py --out DIR        # ~6 min on an H200
     python benchmarks/gpu_step.py --completion 256 --shared on --generation eager compiled
     python benchmarks/gpu_step.py --zero3                  # DeepSpeed ZeRO-3, toy sizes
Run (CPU, toy sizes, what the tests run): python benchmarks/gpu_step.py --tiny [--zero3]
Results: one JSON per configuration under ``--out`` (written as each finishes) and a last line
``gpu_seconds_per_prompt_group: X`` (the fastest configuration at the shortest cap).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Qwen2.5-VL-7B-Instruct's architecture (its config.json), without the token ids, which come
#: from the tokenizer in use.
QWEN25_VL_7B: dict[str, dict[str, Any]] = {
    "text_config": {
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "max_position_embeddings": 128000, "max_window_layers": 28, "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24],
                            "rope_theta": 1_000_000.0},
    },
    "vision_config": {
        "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
        "out_hidden_size": 3584, "patch_size": 14, "temporal_patch_size": 2,
        "spatial_merge_size": 2, "tokens_per_second": 2, "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
}
#: Toy sizes for ``--tiny`` and for benchmarks/grpo_step.py (same architecture, 4.5 M
#: parameters).
TINY: dict[str, dict[str, Any]] = {
    "text_config": {
        "vocab_size": 2048, "hidden_size": 256, "intermediate_size": 768,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 32768, "max_window_layers": 4,
        "rope_parameters": {"rope_type": "default", "mrope_section": [8, 12, 12],
                            "rope_theta": 1_000_000.0},
    },
    "vision_config": {
        "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
        "out_hidden_size": 256, "patch_size": 14, "temporal_patch_size": 2,
        "spatial_merge_size": 2, "tokens_per_second": 2, "window_size": 112,
        "fullatt_block_indexes": [1],
    },
}
PAPER = {"frames": 16, "side": 420, "fps": 2.0}  # 16 x 420 x 420 ~ 3584 x 28 x 28 pixels
TINY_VIDEO = {"frames": 4, "side": 56, "fps": 2.0}
QUESTION = "When does the red circle appear? Answer with <answer>start to end</answer>."


def question(extra_words: int) -> str:
    """The benchmark's question, ``extra_words`` words longer."""
    return QUESTION if not extra_words else f"{QUESTION} {' '.join(['please'] * extra_words)}"


def build_processor() -> Any:
    """The project's offline Qwen2.5-VL processor (Qwen's tokenizer rules and chat template).

    The BPE is trained on the question alone: the vocabulary's content does not matter here,
    and the full corpus would import the data sources, which the GPU image does not need.
    """
    from videorft.model.tiny import TinyModelSpec, build_processor, build_tokenizer

    spec = TinyModelSpec()
    return build_processor(build_tokenizer([QUESTION] * 4, spec.bpe_vocab_size), spec)


def build_model(sizes: dict[str, dict[str, Any]], tokenizer: Any, dtype: torch.dtype,
                device: torch.device) -> Any:
    """A random Qwen2.5-VL of ``sizes``, made directly on ``device`` in ``dtype``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    def token_id(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    pad, eos = token_id("<|endoftext|>"), token_id("<|im_end|>")
    text = {**sizes["text_config"], "bos_token_id": pad, "eos_token_id": eos,
            "pad_token_id": pad}
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=sizes["vision_config"],
        image_token_id=token_id("<|image_pad|>"), video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"), tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with device:
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model


def video_loader(video: dict[str, Any]) -> Callable[[dict[str, Any]], tuple[np.ndarray, float]]:
    """Row -> (random uint8 frames, fps), drawn from the row's seed: no video files needed."""
    shape = (video["frames"], video["side"], video["side"], 3)

    def load(row: dict[str, Any]) -> tuple[np.ndarray, float]:
        rng = np.random.default_rng(int(row["video_seed"]))
        return rng.integers(0, 256, size=shape, dtype=np.uint8), video["fps"]

    return load


def length_reward(completions: list[Any], **_: Any) -> list[float]:
    """Any non-constant reward will do: the step's cost does not depend on its values."""
    return [float(len(c[0]["content"]) % 7) for c in completions]


class PhaseClock:
    """Wall time per phase of the trainer's step, with the device synchronised at each edge."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        # Useful work of the log-prob passes, in forward-pass units (a backward counts 2): text
        # tokens (each group's prompt once, plus its completions) and videos (once per group).
        self.useful_tokens = 0
        self.useful_videos = 0
        # The first policy pass's per-token log-probs (the ZeRO-3 check compares them).
        self.first_policy_logps: torch.Tensor | None = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] += time.perf_counter() - start

    def reset(self) -> None:
        self.seconds.clear()
        self.useful_tokens = self.useful_videos = 0


def instrument(trainer: Any, clock: PhaseClock, group: int) -> None:
    """Wrap the trainer's phases (instance attributes only: the classes stay untouched)."""
    from transformers import TrainerCallback

    generate = trainer._generate_single_turn
    logps = trainer._get_per_token_logps_and_entropies
    backward = trainer.accelerator.backward

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        with clock.phase("generation"):
            return generate(*args, **kwargs)

    def timed_logps(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    logits_to_keep: int, *args: Any, **kwargs: Any) -> Any:
        grad = torch.is_grad_enabled()
        units = 3 if grad else 1  # forward + backward, or forward only
        prompt = int(attention_mask[:, :-logits_to_keep].sum()) // group  # once per group
        completions = int(attention_mask[:, -logits_to_keep:].sum())
        clock.useful_tokens += (prompt + completions) * units
        clock.useful_videos += input_ids.size(0) // group * units
        with clock.phase("policy forward" if grad else "log-probs without grad"):
            out = logps(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        if grad and clock.first_policy_logps is None:
            clock.first_policy_logps = out[0].detach().float().cpu()
        return out

    def timed_backward(*args: Any, **kwargs: Any) -> Any:
        with clock.phase("backward"):
            return backward(*args, **kwargs)

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            clock.sync()
            self.began = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            clock.sync()
            self.optimizer_began = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):
            clock.sync()
            clock.seconds["optimizer"] += time.perf_counter() - self.optimizer_began

        def on_step_end(self, args, state, control, **kwargs):
            clock.sync()
            clock.seconds["step"] += time.perf_counter() - self.began

    trainer._generate_single_turn = timed_generate
    trainer._get_per_token_logps_and_entropies = timed_logps
    trainer.accelerator.backward = timed_backward
    trainer.add_callback(StepTimes())


def parameter_counts(model: Any) -> tuple[int, int]:
    """(language-model parameters without the embedding table, vision-tower parameters)."""

    def count(param: torch.Tensor) -> int:
        return int(getattr(param, "ds_numel", param.numel()))  # ZeRO-3: the unsharded size

    vision = sum(count(p) for p in model.model.visual.parameters())
    embedding = count(model.get_input_embeddings().weight)
    return sum(count(p) for p in model.parameters()) - vision - embedding, vision


def run_config(*, sizes: dict[str, dict[str, Any]], video: dict[str, Any], processor: Any,
               shared: bool, completion: int, groups: int, warmup: int, steps: int,
               device: torch.device, dtype: torch.dtype, peak_tflops: float,
               checkpointing: bool = True, generation: str = "eager",
               deepspeed: str | None = None, varied_prompts: bool = False) -> dict[str, Any]:
    """Build model + trainer, run warm-up and timed steps, return the measurements.

    ``generation``: ``eager`` (TRL's dynamic KV cache), ``static`` (a preallocated cache
    written in place) or ``compiled`` (static, and the decoding step compiled with CUDA graphs:
    the trainer's ``compile_generation``; on CPU the same as static). ``deepspeed``: a DeepSpeed
    config file for the Trainer (the ZeRO-3 check). ``varied_prompts``: step i's question
    carries i extra words, so every step has a new prompt length (as real data does), which a
    compiled decoding step must handle without compiling again each time.
    """
    import trl.trainer.grpo_trainer as grpo_module
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig

    from videorft.trainer import VideoGRPOTrainer

    rows = [{"prompt": [{"role": "user", "content": [{"type": "video"},
                                                     {"type": "text", "text": question(
                                                         i if varied_prompts else 0)}]}],
             "video_seed": i} for i in range(warmup + steps)]
    bf16 = dtype == torch.bfloat16
    with tempfile.TemporaryDirectory() as scratch:
        args = GRPOConfig(
            output_dir=scratch, per_device_train_batch_size=groups, num_generations=groups,
            gradient_accumulation_steps=1, max_steps=warmup + steps, learning_rate=1e-6,
            beta=0.04, temperature=1.0, max_completion_length=completion,
            generation_kwargs={"min_new_tokens": completion}, bf16=bf16,
            cache_implementation=None if generation == "eager" else "static",
            deepspeed=deepspeed,
            use_cpu=device.type == "cpu", activation_checkpointing=checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False}, logging_steps=1,
            save_strategy="no", report_to=[], remove_unused_columns=False, seed=0,
            dataloader_num_workers=0, shuffle_dataset=False, disable_tqdm=True,
        )
        # After the arguments, as in training: with ZeRO-3 they make the model load sharded.
        model = build_model(sizes, processor.tokenizer, dtype, device)
        text_params, vision_params = parameter_counts(model)
        # TRL re-loads the reference from the policy's folder; a random policy has none. The
        # same seed builds the same weights (a copy of a ZeRO-3 model would copy its shards'
        # empty placeholders).
        original = grpo_module.create_model_from_path
        grpo_module.create_model_from_path = lambda *_, **__: build_model(
            sizes, processor.tokenizer, dtype, device)
        try:
            trainer = VideoGRPOTrainer(
                model=model, args=args, reward_funcs=[length_reward],
                train_dataset=Dataset.from_list(rows), processing_class=processor,
                video_loader=video_loader(video), shared_prompt=shared,
                compile_generation=generation == "compiled")
        finally:
            grpo_module.create_model_from_path = original
        trainer.remove_callback(PrinterCallback)  # one line per configuration, not per step
        clock = PhaseClock(device)
        instrument(trainer, clock, groups)

        class ResetAfterWarmup(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == warmup:
                    clock.reset()
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(device)

        trainer.add_callback(ResetAfterWarmup())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.train()
        logs = [e for e in trainer.state.log_history if "completions/mean_length" in e]
    lengths = [e["completions/mean_length"] for e in logs[warmup:]]
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    prompt_video_tokens = video["frames"] // 2 * (video["side"] // 28) ** 2
    patches_per_group = prompt_video_tokens * 4
    seconds = {k: v / steps for k, v in clock.seconds.items()}
    phases = ("generation", "log-probs without grad", "policy forward", "backward", "optimizer")
    seconds["other"] = seconds.get("step", 0.0) - sum(seconds.get(p, 0.0) for p in phases)
    # Useful FLOPs of the log-prob/backward passes: 2 x parameters per token (or patch) forward.
    flops = 2 * (text_params * clock.useful_tokens
                 + vision_params * patches_per_group * clock.useful_videos) / steps
    pass_seconds = sum(seconds.get(p, 0.0) for p in phases[1:4])
    generated = float(np.mean(lengths)) * groups if lengths else 0.0
    result = {
        "shared_prompt": shared, "completion_cap": completion, "groups": groups,
        "generation": generation, "deepspeed": deepspeed,
        # Same seed, same first batch: both paths must give the same first step.
        "first_step": {"loss": logs[0]["loss"], "grad_norm": logs[0]["grad_norm"]},
        "timed_steps": steps, "video_tokens": prompt_video_tokens,
        "text_params": text_params, "vision_params": vision_params,
        "seconds_per_step": seconds.get("step", 0.0),
        "phase_seconds": {p: round(seconds.get(p, 0.0), 3) for p in (*phases, "other")},
        "generated_tokens_per_step": generated,
        "generated_tokens_per_s": generated / seconds["generation"] if seconds.get(
            "generation") else 0.0,
        "peak_memory_gib": peak / 2**30,
        "logprob_backward_mfu": flops / pass_seconds / (peak_tflops * 1e12) if pass_seconds
        else 0.0,
        "gpu_seconds_per_prompt_group": seconds.get("step", 0.0) / 1,  # 1 group per step, 1 GPU
        "first_policy_logps": clock.first_policy_logps,  # not written to the JSON
    }
    del trainer, model
    torch._dynamo.reset()  # compiled generation: drop its graphs (and their memory pools)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def report(result: dict[str, Any]) -> str:
    phases = ", ".join(f"{k} {v:.2f}" for k, v in result["phase_seconds"].items())
    return (f"shared_prompt={result['shared_prompt']!s:<5} cap={result['completion_cap']:<5} "
            f"{result['generation']:<8} {result['seconds_per_step']:.2f} s/step ({phases}); "
            f"generated {result['generated_tokens_per_s']:.0f} tok/s; peak "
            f"{result['peak_memory_gib']:.1f} GiB; log-prob/backward MFU "
            f"{100 * result['logprob_backward_mfu']:.1f}%")


def result_tag(result: dict[str, Any]) -> str:
    """File name part of a configuration: shared-256, plain-1024-compiled, zero3-shared-256."""
    parts = ["zero3"] if result["deepspeed"] else []
    parts += ["shared" if result["shared_prompt"] else "plain", str(result["completion_cap"])]
    if result["generation"] != "eager":
        parts.append(result["generation"])
    return "-".join(parts)


def zero3_environment() -> None:
    """One-process torch.distributed settings, so DeepSpeed starts without a launcher."""
    import os

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes on CPU (the test's run)")
    parser.add_argument("--completion", type=int, nargs="+", default=None,
                        help="completion caps to run (default 256 1024; --tiny: 8)")
    parser.add_argument("--generation", nargs="+", choices=("eager", "static", "compiled"),
                        default=["eager"], help="eager: TRL's decoding (dynamic cache); static: "
                        "a preallocated cache; compiled: static, and the decoding step compiled "
                        "with CUDA graphs")
    parser.add_argument("--shared", nargs="+", choices=("on", "off"), default=["on", "off"],
                        help="shared prompt settings to run")
    parser.add_argument("--varied-prompts", action="store_true",
                        help="a new prompt length at every step (real data), instead of one")
    parser.add_argument("--zero3", action="store_true",
                        help="DeepSpeed ZeRO-3 check instead: toy sizes in float32 on one "
                        "device, shared on vs off; compares the first policy log-probs")
    parser.add_argument("--groups", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per configuration")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--out", type=Path, default=None, help="folder for one JSON per run")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if not args.tiny and device.type != "cuda":
        print("gpu_step: no CUDA device; use --tiny for the CPU run", file=sys.stderr)
        return 1
    sizes, video = (TINY, TINY_VIDEO) if args.tiny or args.zero3 else (QWEN25_VL_7B, PAPER)
    dtype = torch.float32 if args.tiny or args.zero3 else torch.bfloat16
    caps = args.completion or ([8] if args.tiny or args.zero3 else [256, 1024])
    deepspeed = None
    if args.zero3:
        zero3_environment()
        deepspeed = str(Path(__file__).resolve().parents[1] / "configs/deepspeed/zero3.json")
        args.shared, args.generation = ["on", "off"], ["eager"]
    processor = build_processor()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; G={args.groups}; video "
          f"{video['frames']} x {video['side']} x {video['side']}; {args.warmup} warm-up + "
          f"{args.steps} timed steps per configuration"
          f"{'; DeepSpeed ZeRO-3' if deepspeed else ''}", flush=True)
    results = []
    for cap in caps:
        for generation in args.generation:
            for shared in (mode == "on" for mode in args.shared):
                began = time.perf_counter()
                result = run_config(sizes=sizes, video=video, processor=processor,
                                    shared=shared, completion=cap, groups=args.groups,
                                    warmup=args.warmup, steps=args.steps, device=device,
                                    dtype=dtype, peak_tflops=args.peak_tflops,
                                    generation=generation, deepspeed=deepspeed,
                                    varied_prompts=args.varied_prompts)
                result["wall_seconds"] = time.perf_counter() - began
                results.append(result)
                print(report(result), flush=True)
                if args.out:
                    written = {k: v for k, v in result.items() if k != "first_policy_logps"}
                    (args.out / f"gpu_step-{result_tag(result)}.json").write_text(
                        json.dumps(written, indent=1))
    for cap in caps:
        for generation in args.generation:
            pair = {r["shared_prompt"]: r for r in results
                    if r["completion_cap"] == cap and r["generation"] == generation}
            if len(pair) < 2:
                continue
            print(f"cap {cap} {generation}: whole_step_speedup (plain / shared): "
                  f"{pair[False]['seconds_per_step'] / pair[True]['seconds_per_step']:.2f}")
            print(f"cap {cap} {generation}: first step, shared {pair[True]['first_step']} / "
                  f"plain {pair[False]['first_step']}")
            on, off = pair[True]["first_policy_logps"], pair[False]["first_policy_logps"]
            if on is not None and off is not None and on.shape == off.shape:
                print(f"cap {cap} {generation}: first policy log-probs, shared vs plain: "
                      f"max |diff| {float((on - off).abs().max()):.2e}")
    for cap in caps:
        for shared in (mode == "on" for mode in args.shared):
            by = {r["generation"]: r for r in results
                  if r["completion_cap"] == cap and r["shared_prompt"] == shared}
            for other in set(by) - {"eager"} if "eager" in by else ():
                print(f"cap {cap} shared_prompt={shared}: {other}_generation_speedup "
                      f"(eager / {other} step): "
                      f"{by['eager']['seconds_per_step'] / by[other]['seconds_per_step']:.2f}")
    best = min((r for r in results if r["completion_cap"] == caps[0]),
               key=lambda r: r["seconds_per_step"])
    print(f"gpu_seconds_per_prompt_group: {best['gpu_seconds_per_prompt_group']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
