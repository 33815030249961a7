"""Shared-prompt log-prob passes == plain passes (values and gradients), and run the prompt once.

Why: :func:`videorft.trainer.shared_prompt.shared_prompt_logps` replaces G full forwards by one
prompt pass per group plus completion-only passes on an expanded key/value cache. Each of its
pitfalls (positions, masks, cache dropped under gradient checkpointing, cut gradients, groups
mixing videos) is silent, so the tests compare against the plain forward the trainer runs with
``shared_prompt=False`` (:func:`~videorft.trainer.shared_prompt.plain_logps`) on the tiny random
Qwen2.5-VL with real video tensors, and count what the vision tower and language model saw.

Batch: three groups (3, 2 and 3 rows): "A" + video 0, a longer "B" + a wider video 1 (so the
prompts are left-padded), "A" + video 2 (same token ids as group 0, other pixels); completions
of lengths 1..7 right-padded to 7 (group 1's at most 2, so it gets its own completion pass),
temperature 0.7 in the fused head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset
from transformers import AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration
from trl import GRPOConfig
from trl.trainer.utils import add_fused_lm_head

from videorft.model.inputs import process_videos
from videorft.model.row_positions import RowPositions, find_rope_index
from videorft.model.tiny import build_tiny_model
from videorft.trainer import GROUP_KEY, VideoGRPOTrainer, shuffle_by_group
from videorft.trainer.shared_prompt import (
    plain_logps,
    prompt_group_ids,
    shared_prompt_generate,
    shared_prompt_logps,
    video_token_types,
)

FPS = 4.0
TEXTS = ("What happens first?", "When does the person stand up and leave the room?")
COMPLETION_LENGTHS = (7, 5, 3, 2, 1, 6, 7, 2)


def _prompt(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def batch(model_dir: Path) -> dict[str, Any]:
    """Prompt+completion rows of three groups, with per-row videos and group ids."""
    processor = AutoProcessor.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, shape, dtype=np.uint8)
              for shape in ((4, 56, 56, 3), (4, 56, 84, 3), (4, 56, 56, 3))]
    texts, rows = [], []
    for text, video, size in zip((TEXTS[0], TEXTS[1], TEXTS[0]), videos, (3, 2, 3), strict=True):
        chat = processor.apply_chat_template(_prompt(text), tokenize=False,
                                             add_generation_prompt=True)
        texts += [chat] * size
        rows += [(video, FPS)] * size
    inputs = process_videos(processor, texts, rows)
    generator = torch.Generator().manual_seed(0)
    count, width = len(rows), max(COMPLETION_LENGTHS)
    completion_mask = (torch.arange(width) < torch.tensor(COMPLETION_LENGTHS)[:, None]).long()
    completions = torch.randint(0, 500, (count, width), generator=generator)
    completions = completions.masked_fill(completion_mask == 0, processor.tokenizer.pad_token_id)
    grid = inputs["video_grid_thw"]
    pixels = list(torch.split(inputs["pixel_values_videos"], grid.prod(-1).tolist()))
    time = inputs["second_per_grid_ts"].float()
    groups = prompt_group_ids(inputs["input_ids"], inputs["attention_mask"], pixels, grid, time)
    return {
        "input_ids": torch.cat([inputs["input_ids"], completions], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"], completion_mask], dim=1),
        "prompt_mask": inputs["attention_mask"],
        "completion_mask": completion_mask,
        "pixels": pixels, "grid": grid, "time": time, "groups": groups,
    }


def test_groups_split_by_video(batch: dict[str, Any]) -> None:
    """Same prompt ids with another video is another group; the prompts are left-padded."""
    assert batch["groups"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    prompt = batch["input_ids"][:, :batch["prompt_mask"].size(1)]
    assert torch.equal(prompt[0], prompt[5])  # groups 0 and 2: identical token ids
    assert not bool(batch["prompt_mask"].all())  # some left padding


def _rope_kwargs(batch: dict[str, Any], index: torch.Tensor, video_id: int,
                 pad: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Rows ``index`` of the batch as ``get_rope_index`` takes them, ``pad`` more columns of
    left padding."""
    ids, mask = batch["input_ids"][index], batch["attention_mask"][index]
    ids = torch.nn.functional.pad(ids, (pad, 0), value=0)
    mask = torch.nn.functional.pad(mask, (pad, 0), value=0)
    keep = batch["completion_mask"].size(1)
    return ids, {"mm_token_type_ids": video_token_types(ids, video_id, keep),
                 "video_grid_thw": batch["grid"][index],
                 "second_per_grid_ts": batch["time"][index], "attention_mask": mask}


def test_row_positions_reuse_each_rows_rope_index(model_dir: Path,
                                                   batch: dict[str, Any]) -> None:
    """Positions served per row from the memo are the rope index's bits, in any row order and
    under any left padding, and a later pass over the same rows computes no row again."""
    model = _model(model_dir)
    rope_index = find_rope_index(model)
    computed: list[int] = []

    def counting(input_ids: torch.Tensor, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        computed.append(input_ids.size(0))
        return rope_index(input_ids, **kwargs)

    memo = RowPositions()
    positions = memo.bind(counting)
    video_id = model.config.video_token_id
    for order, pad in (([0, 1, 2, 3, 4, 5, 6, 7], 0), ([5, 3, 0, 7, 1, 6, 2, 4], 0),
                       ([2, 4], 3)):
        ids, kwargs = _rope_kwargs(batch, torch.tensor(order), video_id, pad)
        want = rope_index(ids, **kwargs)
        got = positions(ids, **kwargs)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (order, pad)
    assert computed == [8] and len(memo) == 8
    memo.clear()
    positions(ids, **kwargs)
    assert computed == [8, 2]


class Seen:
    """Rows seen by the vision tower (videos) and the language model (sequences x tokens)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.videos: list[int] = []
        self.text: list[tuple[int, int]] = []
        inner = model.model
        self.handles = [
            inner.visual.register_forward_pre_hook(
                lambda _m, args, kwargs: self.videos.append(int(kwargs["grid_thw"].size(0))),
                with_kwargs=True),
            inner.language_model.register_forward_pre_hook(
                lambda _m, args, kwargs: self.text.append(tuple(kwargs["inputs_embeds"].shape[:2])),
                with_kwargs=True),
        ]

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _model(model_dir: Path, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=dtype)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    model.train()  # dropout is 0 in the tiny config; train mode is what checkpointing needs
    return model


def _pass(model: torch.nn.Module, batch: dict[str, Any], shared: bool,
          ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], Seen]:
    """(log-probs, entropies, grads of a loss mixing both, what ran) of one pass + backward."""
    keep = batch["completion_mask"].size(1)
    model.zero_grad(set_to_none=True)
    counter = Seen(model)
    try:
        if shared:
            logps, entropy = shared_prompt_logps(
                model, batch["input_ids"], batch["attention_mask"], keep,
                group_ids=batch["groups"], pixel_values_videos=batch["pixels"],
                video_grid_thw=batch["grid"], second_per_grid_ts=batch["time"],
                video_token_id=model.config.video_token_id, compute_entropy=True)
        else:
            logps, entropy, _ = plain_logps(
                model, batch["input_ids"], batch["attention_mask"], keep,
                pixel_values_videos=torch.cat(batch["pixels"]), video_grid_thw=batch["grid"],
                second_per_grid_ts=batch["time"], video_token_id=model.config.video_token_id,
                compute_entropy=True)
    finally:
        counter.close()
    weights = torch.linspace(0.5, 1.5, logps.numel()).view_as(logps)  # rows weigh differently
    mask = batch["completion_mask"]
    ((logps * weights * mask).sum() + 0.1 * (entropy * mask).sum()).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()
             if p.grad is not None}
    return logps.detach(), entropy.detach(), grads, counter


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_shared_matches_plain(model_dir: Path, batch: dict[str, Any], checkpointing: bool) -> None:
    """Log-probs, entropies (1e-5) and every gradient (1e-4 relative), vision tower included.

    The shared pass ran the vision tower on 3 videos (one per group) and the language model on
    3 prompt rows, then the 6 completion rows of groups 0 and 2 (7 tokens + the last prompt
    token) and group 1's 2 rows trimmed to their longest (2 + 1); the plain one on 8 videos
    and 8 full rows.
    """
    model = _model(model_dir)
    if checkpointing:  # what the Trainer does with GRPOConfig's defaults (non-reentrant)
        model.activation_checkpointing_enable()
        assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    plain = _pass(model, batch, shared=False)
    shared = _pass(model, batch, shared=True)

    assert plain[3].videos == [8] and len(plain[3].text) == 1
    prompt_len = batch["prompt_mask"].size(1)
    assert shared[3].videos == [3]
    keep = batch["completion_mask"].size(1)
    assert shared[3].text == [(3, prompt_len - 1), (6, keep + 1), (2, 2 + 1)]

    mask = batch["completion_mask"].bool()
    assert (plain[0] - shared[0]).abs().max().item() < 1e-5
    assert (plain[1] - shared[1]).abs().max().item() < 1e-5
    assert shared[0][~mask].abs().max().item() == 0.0  # padding scores 0, as in the plain pass
    assert plain[0][mask].std().item() > 1e-3  # not trivially equal (temperature, real logits)

    assert set(plain[2]) == set(shared[2])
    vision = [name for name in plain[2] if ".visual." in f".{name}"]
    assert vision and len(vision) == sum(".visual." in f".{n}" for n, _ in
                                         model.named_parameters())
    for name, grad in plain[2].items():
        scale = grad.norm().item()
        assert scale > 0, name
        rel = (grad - shared[2][name]).norm().item() / scale
        assert rel < 1e-4, (name, rel)


def test_wrong_groups_or_reentrant_checkpointing_refused(model_dir: Path,
                                                         batch: dict[str, Any]) -> None:
    """Groups that mix prompts, and reentrant checkpointing (cuts the cache's grads), raise."""
    model = _model(model_dir)
    keep = batch["completion_mask"].size(1)
    common = {"pixel_values_videos": batch["pixels"], "video_grid_thw": batch["grid"],
              "second_per_grid_ts": batch["time"], "video_token_id": model.config.video_token_id}
    with torch.no_grad(), pytest.raises(ValueError, match="differ"):  # group 1 into group 0
        shared_prompt_logps(model, batch["input_ids"], batch["attention_mask"], keep,
                            group_ids=torch.tensor([0, 0, 0, 0, 0, 2, 2, 2]), **common)
    model.activation_checkpointing_enable({"use_reentrant": True})
    with pytest.raises(ValueError, match="non-reentrant"):
        shared_prompt_logps(model, batch["input_ids"], batch["attention_mask"], keep,
                            group_ids=batch["groups"], **common)


def test_bf16_runs(model_dir: Path, batch: dict[str, Any]) -> None:
    """bf16 weights: forward + backward work and stay near the plain pass (bf16 rounding)."""
    model = _model(model_dir, dtype=torch.bfloat16)
    plain = _pass(model, batch, shared=False)
    shared = _pass(model, batch, shared=True)
    mask = batch["completion_mask"].bool()
    assert torch.isfinite(shared[0]).all() and shared[2]
    assert (plain[0] - shared[0])[mask].abs().max().item() < 0.1


def test_shuffle_by_group_keeps_groups_contiguous() -> None:
    torch.manual_seed(0)
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    batch = {GROUP_KEY: groups, "x": torch.arange(8), "l": list(range(8)),
             "n": torch.tensor(5), "none": None}
    out = shuffle_by_group(batch)
    assert out["n"].item() == 5 and out["none"] is None and out["l"] == out["x"].tolist()
    pairs = out[GROUP_KEY].view(4, 2)
    assert torch.equal(pairs[:, 0], pairs[:, 1])
    assert sorted(pairs[:, 0].tolist()) == [0, 1, 2, 3]
    assert torch.equal(groups[out["x"]], out[GROUP_KEY])


# ----------------------------------------------------------------------------- trainer


class Recording(VideoGRPOTrainer):
    """Records each log-prob pass (kind, rows, log-probs) and the vision tower's videos."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[dict[str, Any]] = []

    def _first_loss_pass_is_old_policy(self) -> bool:
        return False  # TRL's own old-policy pass runs, so its shared path is compared too

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           *args: Any, **kwargs: Any):
        counter = Seen(self.accelerator.unwrap_model(model))
        try:
            out = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        finally:
            counter.close()
        kind = ("ref" if model is self.ref_model else
                "loss" if kwargs.get("compute_entropy") else "old")
        video = self._active_video
        self.passes.append({
            "kind": kind, "ids": input_ids.clone(), "mask": attention_mask.clone(),
            "logps": out[0].detach().clone(), "videos": counter.videos,
            "video_sums": [float(p.sum()) for p in video.pixel_values_videos],
            "groups": None if video.group_ids is None else video.group_ids.tolist(),
        })
        return out


def _train(model_dir: Path, out: Path, shared: bool) -> Recording:
    """One optimizer step: 3 prompts x 2 generations, 3 micro-batches of 2, old + ref passes."""
    rng = np.random.default_rng(1)
    dataset = Dataset.from_list([
        {"prompt": _prompt(text), "video": rng.integers(0, 256, (4, 56, 56, 3), dtype=np.uint8),
         "video_fps": FPS}
        for text in (TEXTS[0], TEXTS[1], TEXTS[0])  # two prompts differ only by their video
    ])
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    args = GRPOConfig(
        output_dir=str(out), num_generations=2, max_completion_length=6,
        per_device_train_batch_size=2, gradient_accumulation_steps=3,
        num_iterations=2,  # old-policy pass runs
        max_steps=1, beta=0.1, learning_rate=1e-2, use_cpu=True, bf16=False,
        report_to="none", save_strategy="no", logging_steps=1, seed=0,
    )
    assert args.gradient_checkpointing  # TRL's default: the loss passes run checkpointed
    trainer = Recording(model=model, args=args, processing_class=AutoProcessor.from_pretrained(
        model_dir), reward_funcs=lambda completions, **_: [float(len(str(c)))
                                                           for c in completions],
        train_dataset=dataset, shared_prompt=shared)
    trainer.seen = Seen(model)  # generation's vision-tower runs come first
    trainer.train()
    trainer.seen.close()
    return trainer


def _by_row(passes: list[dict[str, Any]]) -> dict[tuple, torch.Tensor]:
    """Real-token log-probs keyed by (prompt+completion ids, video): order-free comparison."""
    rows = {}
    for p in passes:
        keep = p["logps"].size(1)
        for i in range(p["ids"].size(0)):
            real = p["mask"][i].bool()
            key = (tuple(p["ids"][i][real].tolist()), round(p["video_sums"][i], 1))
            rows[key] = p["logps"][i][real[-keep:]]
    return rows


def test_trainer_shared_matches_plain(model_dir: Path, tmp_path: Path) -> None:
    """Old, ref and loss passes give the plain trainer's log-probs (1e-5) and loss, and each
    loss micro-batch is one whole group: the vision tower sees 1 video where plain sees 2."""
    shared = _train(model_dir, tmp_path / "shared", shared=True)
    plain = _train(model_dir, tmp_path / "plain", shared=False)
    for kind in ("old", "ref", "loss"):
        ours = _by_row([p for p in shared.passes if p["kind"] == kind])
        theirs = _by_row([p for p in plain.passes if p["kind"] == kind])
        assert len(ours) == 6 and set(ours) == set(theirs), kind
        gap = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
        assert gap < 1e-5, (kind, gap)
    # Generation: one prefill (and vision-tower run) per group, then the same completions.
    assert shared.seen.videos[0] == 3 and plain.seen.videos[0] == 6
    loss_passes = [p for p in shared.passes if p["kind"] == "loss"]
    assert len(loss_passes) == 3
    for p in loss_passes:
        assert len(set(p["groups"])) == 1 and p["videos"] == [1], p
    old = next(p for p in shared.passes if p["kind"] == "old")
    assert old["groups"] == [0, 0, 1, 1, 2, 2] and old["videos"] == [1, 1, 1]
    assert all(p["videos"] == [2] for p in plain.passes if p["kind"] == "loss")
    loss = [e["loss"] for e in shared.state.log_history if "loss" in e]
    plain_loss = [e["loss"] for e in plain.state.log_history if "loss" in e]
    assert loss == pytest.approx(plain_loss, rel=1e-4, abs=1e-6)


def test_checkpointing_toggles_leave_one_input_grad_hook(model_dir: Path, tmp_path: Path) -> None:
    """TRL switches gradient checkpointing off and on around generation and the no-grad passes;
    each switch-on registers an input-embedding hook in transformers 5.24. The trainer keeps
    one, so forwards do not slow down step after step and a compiled decoding step is not
    compiled again at every step."""
    trainer = _train(model_dir, tmp_path, shared=True)
    embeddings = trainer.model.get_input_embeddings()
    hooks = [h for h in embeddings._forward_hooks.values()
             if getattr(h, "__name__", "") == "make_inputs_require_grads"]
    assert trainer.args.gradient_checkpointing and len(hooks) == 1


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_generation_prefills_each_group_once_and_gives_the_plain_tokens(
        model_dir: Path, batch: dict[str, Any], sample: bool) -> None:
    """Three groups of 3, 2 and 3 rows, with left padding (two prompt lengths) and two groups
    that differ only by their video: the completions equal plain ``generate``'s, greedy and
    sampled under one seed, while the vision tower runs once per group, not once per row."""
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    width = batch["prompt_mask"].size(1)
    ids, mask = batch["input_ids"][:, :width], batch["prompt_mask"]
    types = video_token_types(ids, model.config.video_token_id, 0)
    config = GenerationConfig(max_new_tokens=8, do_sample=sample, temperature=1.0, top_k=0,
                              top_p=1.0, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id)
    video = {"video_grid_thw": batch["grid"], "second_per_grid_ts": batch["time"],
             "mm_token_type_ids": types}
    torch.manual_seed(0)
    plain = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                           pixel_values_videos=torch.cat(batch["pixels"]), **video)
    seen = Seen(model)
    torch.manual_seed(0)
    shared = shared_prompt_generate(model, ids, mask, group_ids=batch["groups"],
                                    pixel_values_videos=batch["pixels"],
                                    generation_config=config, **video)
    seen.close()
    assert torch.equal(shared, plain)
    assert not torch.equal(plain[0, width:], plain[3, width:])  # the groups differ
    assert seen.videos == [3]  # one video per group
    assert seen.text[0] == (3, width - 1)  # one prefill per group, then 8-row decoding steps
    assert {rows for rows, _ in seen.text[1:]} == {8}
