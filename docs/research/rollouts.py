"""Sampling and scoring pieces the research scripts beside this file share.

Importable as ``rollouts`` from a script in this folder (its folder is on ``sys.path``), like
``split_rows``: the sampling config GRPO's rollouts use, one row's group of samples, the
content reward, the token log-probs of completions from one plain forward built like the
evaluation's inputs, and the sampling scripts' command-line options.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from videorft.model.generate import greedy_config
from videorft.model.inputs import video_inputs
from videorft.rewards import score
from videorft.video.store import FrameStore


def add_sampling_arguments(parser: argparse.ArgumentParser, *, generations: int,
                           what: str) -> None:
    """``--generations`` (``what`` is its help), ``--temperature`` (GRPO's 0.7), ``--seed`` and
    ``--max-new-tokens`` (a tracking answer's 224), as the sampling scripts name them."""
    parser.add_argument("--generations", type=int, default=generations, help=what)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=224)


def sampling_config(model: Any, tokenizer: Any, max_new_tokens: int, temperature: float) -> Any:
    """The evaluation's generation config (stop tokens, length) with sampling at
    ``temperature`` and ``top_p`` 1.0, as GRPO samples its groups."""
    config = greedy_config(model, tokenizer, max_new_tokens)
    config.do_sample, config.temperature, config.top_p = True, temperature, 1.0
    return config


def sample_group(model: Any, processor: Any, store: FrameStore, row: dict[str, Any],
                 generations: int, config: Any) -> list[str]:
    """``generations`` sampled answers to ``row`` (one batch, its video repeated)."""
    inputs = video_inputs(processor, [row] * generations, store).to(model.device)
    output = model.generate(**inputs, generation_config=config)
    return processor.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:],
                                            skip_special_tokens=True)


def content_reward(completion: str, row: dict[str, Any]) -> float:
    """The row's task reward as the trainer scores it (no thinking), less its format part."""
    components = score(completion, row["task"], row["solution"], thinking=False)
    return sum(value for name, value in components.items() if name != "format")


def completion_logps(model: Any, inputs: Any, completions: torch.Tensor,
                     completion_mask: torch.Tensor, temperature: float) -> torch.Tensor:
    """Token log-probs ``[rows, tokens]`` of ``completions`` after the prompts and videos of
    ``inputs`` (from :func:`video_inputs`), at the sampling temperature, from one forward;
    ``completion_mask`` marks the real tokens (left-padded prompts, right-padded answers)."""
    prompt_len = inputs["input_ids"].shape[1]
    logits = model(
        input_ids=torch.cat([inputs["input_ids"], completions], 1),
        attention_mask=torch.cat([inputs["attention_mask"], completion_mask.long()], 1),
        mm_token_type_ids=torch.cat([inputs["mm_token_type_ids"],
                                     torch.zeros_like(completions)], 1),
        pixel_values_videos=inputs["pixel_values_videos"],
        video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"],
    ).logits[:, prompt_len - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, completions.unsqueeze(-1)).squeeze(-1)
