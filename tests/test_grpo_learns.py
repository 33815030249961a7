"""GRPO with VideoGRPOTrainer actually learns: on the tiny random Qwen2.5-VL, on CPU.

Why: the video guards check that the video reaches every pass, but not that the loss, advantages
and optimiser wiring move the policy the right way. Here the reward is the fraction of completion
tokens drawn from a fixed quarter of the vocabulary (ids ``id % 4 == 0``): a random policy gets
about 0.25, and a working GRPO loop raises it towards 1.0 within 16 steps. Every row carries small
random video frames, so the video path (generation and log-prob passes) runs throughout.

It can fail: the same run with ``learning_rate=0`` (second test) shows no rise, so the rise in
the first test comes from the updates, not from sampling noise or the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, set_seed
from trl import GRPOConfig

from videorft.model.tiny import build_tiny_model
from videorft.trainer import VideoGRPOTrainer

FPS = 2.0
STEPS = 16
WINDOW = 4  # steps averaged at each end


def _reward(completions: list, completion_ids: list[list[int]], **_: Any) -> list[float]:
    """Fraction of the completion's tokens whose id is a multiple of 4."""
    return [sum(t % 4 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def _prompt(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _rewards(model_dir: Path, out: Path, learning_rate: float) -> list[float]:
    """Mean reward per step of a short seeded GRPO run."""
    rng = np.random.default_rng(0)
    dataset = Dataset.from_list([
        {"prompt": _prompt(text), "video": rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8),
         "video_fps": FPS}
        for text in ("What happens first?", "When does the person stand up?")
    ])
    set_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    args = GRPOConfig(
        output_dir=str(out), num_generations=8, max_completion_length=4, temperature=1.0,
        per_device_train_batch_size=8, gradient_accumulation_steps=1, max_steps=STEPS,
        beta=0.0, learning_rate=learning_rate, lr_scheduler_type="constant", use_cpu=True,
        bf16=False, report_to="none", save_strategy="no", logging_steps=1, seed=0,
    )
    trainer = VideoGRPOTrainer(model=model, args=args, processing_class=processor,
                               reward_funcs=_reward, train_dataset=dataset)
    trainer.train()
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    assert len(rewards) == STEPS
    return rewards


def _ends(rewards: list[float]) -> tuple[float, float]:
    return float(np.mean(rewards[:WINDOW])), float(np.mean(rewards[-WINDOW:]))


def test_reward_rises(model_dir: Path, tmp_path: Path) -> None:
    """Mean reward of the last steps clearly above the first (seen: 0.29 -> 0.98)."""
    first, last = _ends(_rewards(model_dir, tmp_path, learning_rate=2e-2))
    print(f"lr=2e-2: first {first:.3f} last {last:.3f}")
    assert last > first + 0.3 and last > 0.7, (first, last)


def test_no_rise_without_updates(model_dir: Path, tmp_path: Path) -> None:
    """Same run with learning_rate=0: the reward stays at chance (seen: 0.30 -> 0.29)."""
    first, last = _ends(_rewards(model_dir, tmp_path, learning_rate=0.0))
    print(f"lr=0: first {first:.3f} last {last:.3f}")
    assert last < first + 0.15, (first, last)
