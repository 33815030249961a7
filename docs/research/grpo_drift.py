"""Where a few GRPO steps take a model: sampled answers and greedy directions, after N steps.

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/grpo_drift.py --steps 60 [--set learning_rate=1e-5 ...] \
        [--deadband 0.1] [--source synthetic_track]

Runs ``--steps`` steps of the project's ``train`` recipe from ``models/warm_start`` (with
the ``train`` fields given by ``--set``; outputs under a temporary folder, the project
untouched), then samples G = 8 answers at temperature 0.7 for the first 12 train rows of
``--task`` from ``--source`` and reports how many break the format and their mean content
reward, and the greedy answers' direction accuracy on the first 64 val rows (tracking: as
``track_axes.py`` counts it). ``--deadband D`` zeroes the advantages of every group whose
content rewards span less than D (a group that differs only in rounding), which TRL has no
option for. rft-miniature.md, r156-r171, reads these numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from rollouts import content_reward, sample_group, sampling_config
from split_rows import add_row_arguments, split_rows
from track_axes import right_directions

import videorft.rewards as rewards
from videorft.model.generate import generate_answers
from videorft.model.loading import load_model_and_processor
from videorft.params import load_params
from videorft.trainer import video_grpo
from videorft.trainer.grpo import train_grpo
from videorft.video.store import FrameStore


def _zero_flat_groups(deadband: float) -> None:
    """Patch the trainer so groups whose content rewards span < ``deadband`` get advantage 0."""
    last: dict[str, list[float]] = {}
    call = rewards.RewardComponent.__call__

    def tapped(self: Any, prompts: Any, completions: Any, **kwargs: Any) -> Any:
        out = call(self, prompts, completions, **kwargs)
        if self.name != "format":
            last[self.name] = [0.0 if v is None else float(v) for v in out]
        return out

    score = video_grpo.VideoGRPOTrainer._generate_and_score_completions

    def scored(self: Any, inputs: Any) -> dict[str, Any]:
        output = score(self, inputs)
        content = torch.tensor([sum(v) for v in zip(*last.values(), strict=True)])
        g = self.num_generations
        for start in range(0, len(content), g):
            group = content[start:start + g]
            if float(group.max() - group.min()) < deadband:
                output["advantages"][start:start + g] = 0.0
        return output

    rewards.RewardComponent.__call__ = tapped
    video_grpo.VideoGRPOTrainer._generate_and_score_completions = scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_row_arguments(parser, rows=12)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a train field, e.g. learning_rate=1e-5 (repeatable)")
    parser.add_argument("--deadband", type=float, default=0.0)
    args = parser.parse_args()

    params = load_params("params.yaml")
    params.train.max_steps = args.steps
    for item in args.set:
        name, value = item.split("=", 1)
        current = getattr(params.train, name)
        setattr(params.train, name, value.lower() == "true" if isinstance(current, bool)
                else type(current)(value))
    if args.deadband:
        _zero_flat_groups(args.deadband)
    train_rows = split_rows(argparse.Namespace(**{**vars(args), "split": "train"}))
    val_rows = split_rows(argparse.Namespace(**{**vars(args), "split": "val", "rows": 64}))
    store = FrameStore(Path(params.paths.frames))
    with tempfile.TemporaryDirectory() as tmp:
        train_grpo(params, Path("."), init_model=Path("models/warm_start"),
                   checkpoints_dir=Path(tmp) / "ck", out_dir=Path(tmp) / "out",
                   metrics_dir=Path(tmp) / "metrics")
        model, processor = load_model_and_processor(Path(tmp) / "out", dtype="float32")
    config = sampling_config(model, processor.tokenizer, 224, 0.7)
    torch.manual_seed(0)
    broken, content = 0, []
    model.eval()
    with torch.inference_mode():
        for row in train_rows:
            for text in sample_group(model, processor, store, row, 8, config):
                broken += rewards.format_reward(text, row["task"], thinking=False) < 1
                content.append(content_reward(text, row))
    answers = generate_answers(model, processor, val_rows, store, max_new_tokens=224)
    right = right_directions(answers, [row["solution"] for row in val_rows])
    print(json.dumps({"steps": args.steps, "set": args.set, "deadband": args.deadband,
                      "sampled_broken": f"{broken}/{len(content)}",
                      "sampled_content": round(statistics.mean(content), 4),
                      **{k: round(right[k] / len(val_rows), 2) for k in ("x", "y", "both")}}))


if __name__ == "__main__":
    main()
