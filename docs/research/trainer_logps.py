"""The GRPO trainer's own log-probs of its first generation, against an independent forward.

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/trainer_logps.py [--init models/warm_start]

Runs one GRPO step of the project's ``train`` recipe (outputs under a temporary folder, the
project untouched), keeps the first generation batch as the trainer scored it, and recomputes
each completion's token log-probs (at the sampling temperature) with one plain forward of
prompt + completion built by :func:`videorft.model.inputs.video_inputs`, the evaluation's
path. It prints the largest gap per completion: ~1e-6 means the old-policy pass saw the same
prompt, video and positions as generation, for completions as long as the project's (tests
check 8-token ones; tracking answers are ~196 tokens).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from rollouts import completion_logps

from videorft.model.inputs import video_inputs
from videorft.model.loading import load_model_and_processor
from videorft.params import load_params
from videorft.trainer import video_grpo
from videorft.trainer.grpo import train_grpo
from videorft.video.store import FrameStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", type=Path, default=Path("models/warm_start"))
    args = parser.parse_args()

    captured: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []
    original = video_grpo.VideoGRPOTrainer._generate_and_score_completions

    def keep_first(self: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = original(self, inputs)
        if not captured:
            captured.append((inputs, {k: v.detach().clone() if torch.is_tensor(v) else v
                                      for k, v in output.items()}))
        return output

    video_grpo.VideoGRPOTrainer._generate_and_score_completions = keep_first
    # The trainer lets the first loss pass stand in for TRL's old-policy pass where it can;
    # this script measures TRL's pass, so it runs.
    video_grpo.VideoGRPOTrainer._first_loss_pass_is_old_policy = lambda self: False
    params = load_params("params.yaml")
    params.train.max_steps = 1
    with tempfile.TemporaryDirectory() as tmp:
        train_grpo(params, Path("."), init_model=args.init, checkpoints_dir=Path(tmp) / "ck",
                   out_dir=Path(tmp) / "out", metrics_dir=Path(tmp) / "metrics")
    rows, output = captured[0]
    if "old_per_token_logps" not in output or output["old_per_token_logps"] is None:
        raise SystemExit("the recipe computes no old-policy pass (train.num_iterations 1?): "
                         "nothing to compare")
    model, processor = load_model_and_processor(args.init, dtype="float32")
    model.eval()
    store = FrameStore(Path(params.paths.frames))
    for i, row in enumerate(rows):
        mask = output["completion_mask"][i].bool()
        completion = output["completion_ids"][i][mask].unsqueeze(0)
        text = row["prompt"][0]["content"][1]["text"]  # the trainer's rows are chat messages
        inputs = video_inputs(processor, [{**row, "prompt": text}], store)
        with torch.no_grad():
            logps = completion_logps(model, inputs, completion, torch.ones_like(completion),
                                     params.train.temperature)[0]
        gap = (output["old_per_token_logps"][i][mask] - logps).abs().max().item()
        print(f"{row['id']}: {completion.size(1)} tokens, largest gap {gap:.2e}")


if __name__ == "__main__":
    main()
