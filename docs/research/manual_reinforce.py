"""Group-baseline REINFORCE by hand, to tell the RL signal apart from the optimiser.

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/manual_reinforce.py models/warm_start --optim sgd --lr 0.005 \
        [--steps 100] [--source synthetic_track] [--rows 64]

Each step samples G = 8 completions (temperature 0.7) for two random train rows of
``--task`` from ``--source``, scores them with the trainer's rewards (format + content),
takes each group's mean as the baseline (no std scaling, no KL term, no clipping, one update
per generation) and applies one optimiser step to the mean over completions of the advantage
times the completion's mean token log-prob (at the sampling temperature). Every
``--every`` steps it prints the greedy content reward on the first ``--rows`` val rows. None
of TRL runs here, so a run that improves with ``sgd`` and degrades with ``adamw`` points at
the optimiser, not at the trainer's plumbing (rft-miniature.md, r156-r171).
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import torch
from rollouts import completion_logps, content_reward, sampling_config
from split_rows import add_row_arguments, split_rows

from videorft.model.generate import generate_answers
from videorft.model.inputs import video_inputs
from videorft.model.loading import load_model_and_processor
from videorft.rewards import score
from videorft.video.store import FrameStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model folder (the warm start)")
    add_row_arguments(parser, rows=64)
    parser.add_argument("--optim", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train = split_rows(argparse.Namespace(**{**vars(args), "split": "train", "rows": 10**9}))
    val = split_rows(argparse.Namespace(**{**vars(args), "split": "val"}))
    store = FrameStore(args.project / "data/frames")
    model, processor = load_model_and_processor(args.model, dtype="float32")
    tokenizer = processor.tokenizer
    config = sampling_config(model, tokenizer, 224, args.temperature)
    optimiser = (torch.optim.SGD(model.parameters(), lr=args.lr) if args.optim == "sgd"
                 else torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0))
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)

    def val_reward() -> float:
        answers = generate_answers(model, processor, val, store, max_new_tokens=224,
                                   batch_size=32)
        return statistics.mean(content_reward(a, r) for a, r in zip(answers, val, strict=True))

    print(f"step 0 val greedy {val_reward():.4f}", flush=True)
    g = args.generations
    for step in range(1, args.steps + 1):
        batch = [row for row in rng.sample(train, 2) for _ in range(g)]
        inputs = video_inputs(processor, batch, store)
        model.eval()
        with torch.no_grad():
            output = model.generate(**inputs, generation_config=config)
        prompt_len = inputs["input_ids"].shape[1]
        completions = output[:, prompt_len:]
        texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
        rewards = torch.tensor([sum(score(t, r["task"], r["solution"], thinking=False).values())
                                for t, r in zip(texts, batch, strict=True)])
        grouped = rewards.view(-1, g)
        advantages = (grouped - grouped.mean(1, keepdim=True)).flatten()
        if advantages.abs().max() < 1e-9:
            continue
        stop = torch.isin(completions, torch.tensor(config.eos_token_id))
        last = torch.where(stop.any(1), stop.int().argmax(1),
                           torch.full((len(completions),), completions.size(1) - 1))
        mask = (torch.arange(completions.size(1))[None] <= last[:, None]).float()
        model.train()
        logps = completion_logps(model, inputs, completions, mask, args.temperature)
        loss = -((logps * mask).sum(1) / mask.sum(1) * advantages).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.every == 0:
            print(f"step {step} val greedy {val_reward():.4f} "
                  f"batch reward {rewards.mean().item():.3f}", flush=True)


if __name__ == "__main__":
    main()
