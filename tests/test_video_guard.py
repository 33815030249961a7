"""Guards that GRPO really trains on the video (VideoGRPOTrainer vs stock TRL 1.16).

Stock ``GRPOTrainer`` cannot take our rows at all (its ``_tokenize_prompts`` renders the
``<|video_pad|>`` placeholder and the processor raises "Found 4 <|video_pad|> tokens in the text
but no videos were passed"). Where a video does reach generation, stock TRL's log-prob passes
still drop it: they forward only image fields. ``StockPasses`` below reproduces exactly that
(our generation, TRL's own ``_get_per_token_logps_and_entropies``), and each test runs its check
against it too and asserts that the check fails there: none of these tests can pass on stock
behaviour.

Model: :func:`videorft.model.tiny.build_tiny_model` (random tiny Qwen2.5-VL, float32, dropout 0).
Independent reference for the log-probs: :func:`videorft.model.inputs.video_inputs` (the model
helper's own way to build inputs from the frame store) plus a plain forward and log-softmax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
from trl import GRPOConfig, GRPOTrainer

from videorft.model.inputs import process_videos, video_inputs
from videorft.model.tiny import build_tiny_model
from videorft.trainer import VideoBatch, VideoGRPOTrainer
from videorft.trainer.video_grpo import distinct_inputs

FPS = 4.0  # second_per_grid_ts = 2 / 4 = 0.5: a wrong default (1.0 or 2/24) shows
TEXTS = ("What happens first?", "When does the person stand up?")


class MemoryStore:
    """The two FrameStore methods video_inputs uses, over in-memory frames."""

    def __init__(self, frames: dict[str, np.ndarray], fps: float) -> None:
        self.frames, self.fps = frames, fps

    def meta(self, key: str) -> dict[str, Any]:
        return {"sample_fps": self.fps}

    def load(self, key: str) -> np.ndarray:
        return self.frames[key]


class Recording(VideoGRPOTrainer):
    """Records every log-prob pass and each loss-pass batch, for the assertions. Runs TRL's
    own old-policy pass, which the trainer skips in TRL's default layout
    (:class:`FirstPassAsOld`), so that its video path stays guarded too."""

    keep_old_pass = True

    def _first_loss_pass_is_old_policy(self) -> bool:
        return not self.keep_old_pass and super()._first_loss_pass_is_old_policy()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[dict[str, Any]] = []
        self.loss_batches: list[dict[str, Any]] = []
        self.generated: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           *args: Any, **kwargs: Any):
        out = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        kind = ("ref" if model is self.ref_model else
                "loss" if kwargs.get("compute_entropy") else "old")
        self.passes.append({"kind": kind, "video": self._active_video is not None,
                            "logps": out[0].detach().clone()})
        return out

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.generated.append(([dict(row) for row in inputs], output))
        return output

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        self.loss_batches.append({"inputs": inputs, "logps": self.passes[-1]["logps"]})
        return loss


class FirstPassAsOld(Recording):
    """The trainer as it runs: the first loss pass over each micro-batch stands in for TRL's
    old-policy pass."""

    keep_old_pass = False


class StockPasses(Recording):
    """Stock TRL 1.16's log-prob passes (images only) behind our video-aware generation."""

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           *args: Any, **kwargs: Any):
        out = GRPOTrainer._get_per_token_logps_and_entropies(
            self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        kind = ("ref" if model is self.ref_model else
                "loss" if kwargs.get("compute_entropy") else "old")
        self.passes.append({"kind": kind, "video": False, "logps": out[0].detach().clone()})
        return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def store() -> MemoryStore:
    rng = np.random.default_rng(0)
    frames = {f"v{i}": rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8) for i in range(2)}
    return MemoryStore(frames, FPS)


def _reward(completions: list, **_: Any) -> list[float]:
    """Non-constant (length of the text), so group advantages are non-zero."""
    return [float(len(str(c))) for c in completions]


def _prompt(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]


def _train(cls: type[Recording], model_dir: Path, out: Path, dataset: Dataset,
           **kwargs: Any) -> Recording:
    """A tiny GRPO run: 2 prompts x 2 generations, 2 micro-batches of 2, beta > 0."""
    trainer = _trainer(cls, model_dir, out, dataset, **kwargs)
    trainer.train()
    return trainer


def _trainer(cls: type[Recording], model_dir: Path, out: Path, dataset: Dataset,
             **kwargs: Any) -> Recording:
    """:func:`_train`'s trainer, before training."""
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    args = GRPOConfig(
        output_dir=str(out), num_generations=2, max_completion_length=8,
        per_device_train_batch_size=2, gradient_accumulation_steps=2,
        num_iterations=2,  # generation every 2 optimizer steps: the old-policy pass runs
        max_steps=2, beta=0.1, learning_rate=1e-2, use_cpu=True, bf16=False,
        report_to="none", save_strategy="no", logging_steps=1, seed=0,
    )
    return cls(model=model, args=args, processing_class=processor, reward_funcs=_reward,
               train_dataset=dataset, **kwargs)


def _vision_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if ".visual." in f".{k}"}


def test_vision_tower_trains_and_every_pass_sees_video(model_dir: Path, store: MemoryStore,
                                                       tmp_path: Path) -> None:
    """Vision weights move, and policy/old/ref passes all ran with the video (stock: frozen)."""
    dataset = Dataset.from_list([
        {"prompt": _prompt(t), "video": store.frames[f"v{i}"], "video_fps": FPS}
        for i, t in enumerate(TEXTS)
    ])
    before = _vision_params(
        Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32))
    assert before

    ours = _train(Recording, model_dir, tmp_path / "ours", dataset)
    after = _vision_params(ours.model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), f"unchanged vision params: {set(before) - set(changed)}"
    kinds = {p["kind"] for p in ours.passes}
    assert kinds == {"loss", "old", "ref"}
    assert all(p["video"] for p in ours.passes)
    # The policy given as an instance and the reference TRL loads both batch their windows.
    for model in (ours.model, ours.ref_model):
        attention = {type(m).__name__ for m in model.modules()
                     if type(m).__name__.endswith("VisionAttention")}
        assert attention == {"WindowBatchedVisionAttention"}

    stock = _train(StockPasses, model_dir, tmp_path / "stock", dataset)
    stock_after = _vision_params(stock.model)
    assert all(torch.equal(before[k], stock_after[k]) for k in before), \
        "stock passes should leave the vision tower untouched (no video in the loss)"


def _reference_logps(model: torch.nn.Module, processor: Any, store: MemoryStore, text: str,
                     key: str, completion: list[int]) -> torch.Tensor:
    """Completion log-probs from one unpadded forward with the model helper's own inputs."""
    inputs = video_inputs(processor, [{"prompt": text, "frames_key": key}], store)
    comp = torch.tensor([completion])
    ids = torch.cat([inputs["input_ids"], comp], dim=1)
    mm = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(comp)], dim=1)
    with torch.no_grad():
        logits = model(
            input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
            pixel_values_videos=inputs["pixel_values_videos"],
            video_grid_thw=inputs["video_grid_thw"],
            second_per_grid_ts=inputs["second_per_grid_ts"],
        ).logits
    logps = torch.log_softmax(logits[0, -comp.size(1) - 1:-1].float(), dim=-1)
    return logps.gather(-1, comp[0].unsqueeze(-1)).squeeze(-1)


def _check_logps(trainer: Recording, store: MemoryStore, model_dir: Path) -> tuple[float, float]:
    """(max |old pass - independent forward|, max |loss pass - old pass|) over real tokens.

    The independent forward uses the *initial* weights, which the old-policy pass (at
    generation time, before any update) also used; the first optimizer step comes after two
    micro-batches, so both loss passes of the first generation also ran on initial weights.
    """
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    rows, output = trainer.generated[0]
    old = output["old_per_token_logps"]
    gen_gap = 0.0
    for i, row in enumerate(rows):
        mask = output["completion_mask"][i].bool()
        completion = output["completion_ids"][i][mask].tolist()
        ref = _reference_logps(model, processor, store, row["prompt"][0]["content"][1]["text"],
                               row["frames_key"], completion)
        gen_gap = max(gen_gap, (old[i][mask] - ref).abs().max().item())
    loss_gap = 0.0
    for batch in trainer.loss_batches[:2]:  # the two micro-batches before the first update
        inputs = batch["inputs"]
        mask = inputs["completion_mask"].bool()
        diff = (batch["logps"] - inputs["old_per_token_logps"]).abs()[mask]
        loss_gap = max(loss_gap, diff.max().item())
    return gen_gap, loss_gap


def test_loss_pass_logps_match_generation_time(model_dir: Path, store: MemoryStore,
                                               tmp_path: Path) -> None:
    """Old-policy pass == independent forward with the video; loss pass == old pass (1e-5).

    Frames come through ``video_loader`` (the frame-store path), and the shuffled,
    micro-batched loss passes must still pair each sequence with its own video. Stock passes
    agree with themselves (both text-only) but not with the forward that sees the video.
    """
    dataset = Dataset.from_list([
        {"prompt": _prompt(t), "frames_key": f"v{i}"} for i, t in enumerate(TEXTS)
    ])

    def loader(row: dict[str, Any]) -> tuple[np.ndarray, float]:
        return store.load(row["frames_key"]), store.meta(row["frames_key"])["sample_fps"]

    ours = _train(Recording, model_dir, tmp_path / "ours", dataset, video_loader=loader)
    gen_gap, loss_gap = _check_logps(ours, store, model_dir)
    assert gen_gap < 1e-5
    assert loss_gap < 1e-5

    stock = _train(StockPasses, model_dir, tmp_path / "stock", dataset, video_loader=loader)
    stock_gen_gap, _ = _check_logps(stock, store, model_dir)
    assert stock_gen_gap > 1e-3, "stock passes should disagree with a forward that sees the video"


def test_dropping_or_swapping_video_changes_logps(model_dir: Path, store: MemoryStore,
                                                  tmp_path: Path) -> None:
    """Zeroed or swapped videos change our log-probs; the stock pass cannot tell them apart."""
    dataset = Dataset.from_list([
        {"prompt": _prompt(TEXTS[0]), "video": store.frames[f"v{i}"], "video_fps": FPS}
        for i in range(2)  # same text: only the video tells the two prompts apart
    ])
    trainer = _train(Recording, model_dir, tmp_path / "ours", dataset)
    inputs = trainer.loss_batches[-1]["inputs"]
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attn = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    keep = inputs["completion_ids"].size(1)
    mask = inputs["completion_mask"].bool()
    real = dict(inputs)
    videos = inputs["pixel_values_videos"]
    zeroed = {**inputs, "pixel_values_videos": [torch.zeros_like(p) for p in videos]}
    # Another video of the same shape: the same patches in reverse order.
    other = {**inputs, "pixel_values_videos": [p.flip(0) for p in videos]}

    def logps(batch: dict[str, Any], stock: bool = False) -> torch.Tensor:
        with torch.no_grad(), trainer._video_active(VideoBatch.from_inputs(batch)):
            if stock:
                out = GRPOTrainer._get_per_token_logps_and_entropies(
                    trainer, trainer.model, ids, attn, keep)
            else:
                out = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attn, keep)
        return out[0][mask]

    base = logps(real)
    assert (base - logps(zeroed)).abs().max().item() > 1e-4
    assert (base - logps(other)).abs().max().item() > 1e-4
    stock_base = logps(real, stock=True)
    assert torch.equal(stock_base, logps(zeroed, stock=True))
    assert torch.equal(stock_base, logps(other, stock=True))


def test_repeated_prompts_are_processed_once_with_the_same_bits(model_dir: Path,
                                                                store: MemoryStore,
                                                                tmp_path: Path) -> None:
    """TRL hands each prompt G times: processing each distinct (prompt, video) once and
    repeating its outputs gives the very tensors of processing every row."""
    pairs = [(0, "v0"), (0, "v1"), (0, "v0"), (1, "v0"), (0, "v1"), (1, "v0")]
    rows = [{"prompt": _prompt(TEXTS[t]), "key": key} for t, key in pairs]
    dataset = Dataset.from_list([{"prompt": _prompt(t), "key": "v0"} for t in TEXTS])
    trainer = _trainer(Recording, model_dir, tmp_path, dataset,
                       video_loader=lambda row: (store.load(row["key"]), FPS))
    prompts = [row["prompt"] for row in rows]
    got = trainer._process_videos(prompts, rows)

    texts = trainer.processing_class.apply_chat_template(prompts, add_generation_prompt=True,
                                                         tokenize=False)
    videos = [(store.load(key), FPS) for _, key in pairs]
    # Same text, other video and same video, other text are distinct; repeats are not.
    assert distinct_inputs(texts, videos) == ([0, 1, 3], [0, 1, 0, 2, 1, 2])
    every_row = process_videos(trainer.processing_class, texts, videos)
    assert set(got) == set(every_row)
    for key, value in every_row.items():
        assert torch.equal(torch.as_tensor(got[key]), torch.as_tensor(value)), key


def test_first_loss_pass_stands_in_for_the_old_policy_pass(model_dir: Path, store: MemoryStore,
                                                           tmp_path: Path) -> None:
    """In TRL's default layout the trainer skips TRL's old-policy pass and hands each
    micro-batch's later iteration its first loss pass's log-probs: the very bits TRL's pass
    computes, so the trained weights are equal too."""
    dataset = Dataset.from_list([
        {"prompt": _prompt(t), "video": store.frames[f"v{i}"], "video_fps": FPS}
        for i, t in enumerate(TEXTS)
    ])
    skipping = _train(FirstPassAsOld, model_dir, tmp_path / "skipping", dataset)
    passing = _train(Recording, model_dir, tmp_path / "passing", dataset)
    assert {p["kind"] for p in skipping.passes} == {"loss", "ref"}
    assert {p["kind"] for p in passing.passes} == {"loss", "old", "ref"}
    assert len(skipping.loss_batches) == len(passing.loss_batches) == 4
    for ours, theirs in zip(skipping.loss_batches, passing.loss_batches, strict=True):
        assert torch.equal(ours["inputs"]["old_per_token_logps"],
                           theirs["inputs"]["old_per_token_logps"])
    # The later iterations (after the first update) got the first passes' log-probs.
    for first, later in zip(skipping.loss_batches[:2], skipping.loss_batches[2:], strict=True):
        assert later["inputs"] is first["inputs"]
        assert torch.equal(later["inputs"]["old_per_token_logps"], first["logps"])
    weights = passing.model.state_dict()
    assert all(torch.equal(value, weights[name])
               for name, value in skipping.model.state_dict().items())
