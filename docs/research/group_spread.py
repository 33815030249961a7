"""How much GRPO could gain on some rows: a model's sampled groups against its greedy answers.

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/group_spread.py models/warm_start \
        [--split train] [--task tracking] [--source synthetic] [--rows 24] \
        [--generations 8] [--temperature 0.7] [--seed 0] [--max-new-tokens 224] [--show]

Why: GRPO only reweights what it samples. A group whose G completions all score the same has
zero advantage and teaches nothing, and an item the model never answers right in G samples
cannot be learned from its own rewards. So before a GRPO run, compare per item the greedy
answer's content reward with the best of G sampled completions (at GRPO's temperature): the
mean gap, "headroom", bounds what sharpening the policy can give on those items (r120 in
rft-miniature.md). ``--show`` prints every group's sorted rewards.

The content reward is the sum of the task's content components (tracking: mean box IoU;
temporal grounding: IoU; grounded QA: glue IoU + letter), format not included.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from rollouts import add_sampling_arguments, content_reward, sample_group, sampling_config
from split_rows import add_row_arguments, split_rows

from videorft.model.generate import generate_answers
from videorft.model.loading import load_model_and_processor
from videorft.video.store import FrameStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders")
    add_row_arguments(parser, rows=24)
    add_sampling_arguments(parser, generations=8, what="G, samples per row")
    parser.add_argument("--show", action="store_true", help="print each group's rewards")
    args = parser.parse_args()

    rows = split_rows(args)
    store = FrameStore(args.project / "data/frames")
    for folder in args.models:
        model, processor = load_model_and_processor(folder, dtype="float32")
        greedy = [content_reward(answer, row) for answer, row in zip(
            generate_answers(model, processor, rows, store,
                             max_new_tokens=args.max_new_tokens, batch_size=len(rows)),
            rows, strict=True)]
        config = sampling_config(model, processor.tokenizer, args.max_new_tokens,
                                 args.temperature)
        torch.manual_seed(args.seed)
        groups = []
        model.eval()
        with torch.inference_mode():
            for row in rows:
                texts = sample_group(model, processor, store, row, args.generations, config)
                groups.append(sorted(content_reward(text, row) for text in texts))
        if args.show:
            for group, greedy_value in zip(groups, greedy, strict=True):
                print(" ".join(f"{r:.2f}" for r in group), f"| greedy {greedy_value:.2f}")
        best = [group[-1] for group in groups]
        summary = {
            "rows": len(rows),
            "greedy": statistics.mean(greedy),
            "sampled": statistics.mean(r for group in groups for r in group),
            f"best_of_{args.generations}": statistics.mean(best),
            "headroom": statistics.mean(b - g for b, g in zip(best, greedy, strict=True)),
            "zero_spread_groups": sum(group[-1] - group[0] < 1e-6 for group in groups) / len(rows),
            "within_group_sd": statistics.mean(statistics.pstdev(group) for group in groups),
        }
        print(folder, args.split, args.task, {k: round(v, 3) for k, v in summary.items()})


if __name__ == "__main__":
    main()
