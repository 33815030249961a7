"""One GRPO step of the tiny model, run alone or under ``accelerate launch --num_processes 2``.

Used by tests/test_multiprocess.py to check data-parallel training: the same global batch must
give the same update on one process as on two (DDP over gloo averages the two halves'
gradients), and every process must hold whole prompt groups (the shared-prompt pass runs one
prompt per group and bypasses the DDP wrapper for it).

Sampling differs between layouts (other random streams, other batch shapes), so generation is
replaced by fixed completions: the k-th copy of a prompt in a process's batch gets completion k
of that prompt, whatever the layout. Their rewards differ within a group, so the advantages and
the gradient are not zero. (The loss itself is: at the first step the importance ratio is 1 and
each group's advantages sum to 0.)

Writes to ``--out``: ``rank<R>.json`` (the prompts that process generated for) and, from the
main process, ``weights.pt`` (the updated parameters) and ``log.json`` (the logged first step).

Run: python tests/ddp_step.py --model DIR --out DIR [--shared-prompt]
     python -m accelerate.commands.launch --multi_gpu --num_processes 2 tests/ddp_step.py ...
     (--multi_gpu also on CPU: DDP over gloo; without it accelerate starts one process)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FPS = 4.0
PROMPTS = 4  # the global batch: 4 prompts x G = 2 completions = 8
GROUP = 2
QUESTIONS = ("When does the square appear?", "Which shape moves left?",
             "What colour is the circle?", "How many shapes are there?")


def fixed_completion(prompt_ids: list[int], copy: int, long: bool, vocab: int,
                     eos: int) -> list[int]:
    """Completion ``copy`` of a prompt: tokens drawn from the prompt's hash, then EOS; 6-7 tokens
    when ``long``, else 1-2, so a process holding both kinds runs them (shared-prompt pass) as
    separate completion passes."""
    digest = hashlib.sha256(json.dumps([prompt_ids, copy]).encode()).digest()
    length = (6 if long else 1) + digest[0] % 2
    return [300 + digest[1 + i] % (vocab - 400) for i in range(length)] + [eos]


def reward(completion_ids: list[list[int]], **_: Any) -> list[float]:
    """Differs between the copies of a prompt, so advantages (and gradients) are not zero."""
    return [float(sum(ids) % 11) for ids in completion_ids]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shared-prompt", action="store_true")
    args = parser.parse_args(argv)

    from datasets import Dataset
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    from trl import GRPOConfig

    from videorft.trainer import VideoGRPOTrainer

    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by the launcher
    rng = np.random.default_rng(0)
    rows = [{"prompt": [{"role": "user", "content": [{"type": "video"},
                                                     {"type": "text", "text": q}]}],
             "video": rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8), "video_fps": FPS}
            for q in QUESTIONS[:PROMPTS]]
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        config = GRPOConfig(
            output_dir=scratch, num_generations=GROUP, max_completion_length=8,
            per_device_train_batch_size=PROMPTS * GROUP // processes,
            gradient_accumulation_steps=1, max_steps=1, beta=0.04, learning_rate=1e-2,
            optim="sgd",  # the update is lr x gradient: AdamW's first step would be ~lr x sign
            use_cpu=True, bf16=False, report_to="none", save_strategy="no", logging_steps=1,
            seed=0, shuffle_dataset=False, activation_checkpointing=True,
            activation_checkpointing_kwargs={"use_reentrant": False},
            ddp_find_unused_parameters=False, disable_tqdm=True,
        )
        trainer = VideoGRPOTrainer(
            model=model, args=config, processing_class=processor, reward_funcs=[reward],
            train_dataset=Dataset.from_list(rows), shared_prompt=args.shared_prompt)
        seen: list[str] = []  # the question of each generated completion
        vocab, eos = model.config.text_config.vocab_size, trainer.eos_token_ids[0]

        def generate(prompt_ids: list[list[int]], *_: Any, **__: Any) -> tuple[list, None]:
            copies: dict[str, int] = {}
            completions = []
            for ids in prompt_ids:
                key = json.dumps(ids)
                copy = copies[key] = copies.get(key, -1) + 1
                question = next(q for q in QUESTIONS if q in processor.tokenizer.decode(ids))
                long = QUESTIONS.index(question) % 2 == 1  # each process gets both kinds
                completions.append(fixed_completion(ids, copy, long, vocab, eos))
                seen.append(question)
            return completions, None

        trainer._generate_single_turn = generate
        trainer.train()
        rank = trainer.accelerator.process_index
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{rank}.json").write_text(json.dumps(seen))
        if trainer.accelerator.is_main_process:
            weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
            torch.save({k: v.detach().cpu() for k, v in weights.items()}, args.out / "weights.pt")
            logged = next(e for e in trainer.state.log_history if "loss" in e)
            (args.out / "log.json").write_text(json.dumps(logged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
