"""Micro-batches by length (videorft.trainer.micro_batches): a multi-task warm-start batch is
run as groups of similar length, and that changes neither the loss nor the gradient.

- ``length_groups`` covers every row once and keeps each group within its fill bound
  (hypothesis);
- each micro-batch is exactly what the collator makes of its rows alone (tokens, padding,
  labels, patches), so nothing is lost or misaligned in the split;
- on the tiny model, the split loss and its gradient equal the whole batch's;
- each micro-batch projects only its answer window onto the vocabulary (the positions the loss
  reads), by hand and on the tiny model.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import Trainer, TrainingArguments

from videorft.model.loading import load_model_and_processor
from videorft.trainer.data import load_split
from videorft.trainer.micro_batches import (
    MIN_FILL,
    LengthSplitTrainer,
    answer_window,
    keep_answer_logits,
    length_groups,
    split_by_length,
)
from videorft.trainer.sft import WarmStartCollator, spread_rows
from videorft.video.store import FrameStore


@given(st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=40))
def test_length_groups_cover_every_row_once_within_the_fill_bound(lengths: list[int]) -> None:
    groups = length_groups(lengths)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        assert group == sorted(group)
        longest = max(lengths[i] for i in group)
        assert min(lengths[i] for i in group) >= MIN_FILL * longest
    longest_first = [max(lengths[i] for i in group) for group in groups]
    assert longest_first == sorted(longest_first, reverse=True)


def test_length_groups_by_hand() -> None:
    assert length_groups([162, 437, 243, 437, 150]) == [[1, 3], [2], [0, 4]]
    assert length_groups([100, 90, 81]) == [[0, 1, 2]]
    assert length_groups([100, 79]) == [[0], [1]]


def test_the_answer_window_by_hand() -> None:
    x = -100
    labels = torch.tensor([[x, x, x, x, 7, 8, 9],
                           [x, x, x, x, x, 5, 6]])
    assert answer_window(labels) == 4  # from position 3, whose logits predict token 7
    kept = keep_answer_logits({"input_ids": labels.clone(), "labels": labels})
    assert kept["logits_to_keep"] == 4
    assert kept["labels"].tolist() == [[x, 7, 8, 9], [x, x, 5, 6]]
    assert kept["input_ids"].shape == (2, 7)  # the model still reads every position
    # No room to trim (an answer from position 1, or none): the batch is unchanged.
    for whole in (torch.tensor([[x, 3, 4]]), torch.full((1, 3), x)):
        assert answer_window(whole) == 3
        assert keep_answer_logits({"labels": whole}).keys() == {"labels"}


@pytest.fixture(scope="module")
def batch_of_four_tasks(tiny_project) -> tuple[WarmStartCollator, list[dict[str, Any]], Any]:
    root, params = tiny_project
    model, processor = load_model_and_processor(root / "tiny-model")
    collator = WarmStartCollator(processor, FrameStore(root / params.paths.frames))
    rows = spread_rows(load_split(root / params.paths.dataset, "train"), 8)
    return collator, rows, model


def test_each_micro_batch_is_what_the_collator_makes_of_its_rows(batch_of_four_tasks) -> None:
    collator, rows, _ = batch_of_four_tasks
    batch = collator(rows)
    lengths = [int(n) for n in batch["attention_mask"].sum(dim=1)]
    groups = length_groups(lengths)
    assert len(groups) > 1, "the tiny project's tasks should differ in length"
    parts = split_by_length(batch)
    assert len(parts) == len(groups)
    for group, part in zip(groups, parts, strict=True):
        alone = collator([rows[i] for i in group])
        assert part.keys() == alone.keys()
        for name, value in alone.items():
            assert torch.equal(part[name], value), name
    # Fewer token positions than the padded batch: the point of the split.
    assert sum(p["input_ids"].numel() for p in parts) < batch["input_ids"].numel()


def test_batches_it_cannot_split_pass_through_whole(batch_of_four_tasks) -> None:
    collator, rows, _ = batch_of_four_tasks
    batch = collator(rows)
    one_task = collator([r for r in rows if r["task"] == rows[0]["task"]])
    unknown = {**batch, "something_else": torch.zeros(3)}
    right_padded = {**batch, "attention_mask": batch["attention_mask"].flip(dims=[1])}
    for whole in (one_task, unknown, right_padded):
        (part,) = split_by_length(whole)
        assert part.keys() == whole.keys()
        assert all(part[k] is whole[k] for k in whole)


def _loss_and_grads(trainer: Trainer, compute: Any, batch: dict[str, Any]) -> tuple[float, dict]:
    trainer.model.zero_grad()
    count = batch["labels"].ne(-100).sum()
    loss = compute(trainer, trainer.model, batch, num_items_in_batch=count)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def test_the_split_loss_and_gradient_are_the_whole_batchs(
    batch_of_four_tasks, tmp_path
) -> None:
    collator, rows, model = batch_of_four_tasks
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = LengthSplitTrainer(model=model, args=args)
    batch = collator(rows)
    assert len(split_by_length(batch)) > 1
    whole_loss, whole_grads = _loss_and_grads(trainer, Trainer.compute_loss, batch)
    split_loss, split_grads = _loss_and_grads(trainer, LengthSplitTrainer.compute_loss, batch)
    assert split_loss == pytest.approx(whole_loss, rel=1e-5)
    assert whole_grads.keys() == split_grads.keys()
    for name, grad in whole_grads.items():
        assert torch.allclose(split_grads[name], grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("loss_average", ["tokens", "rows"])
def test_only_the_answer_window_reaches_the_vocabulary(
    batch_of_four_tasks, tmp_path, loss_average: str
) -> None:
    collator, rows, model = batch_of_four_tasks
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = LengthSplitTrainer(model=model, args=args, loss_average=loss_average)
    batch = collator(rows)
    parts = split_by_length(batch)
    seen: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[1]))
    try:
        trainer.compute_loss(model, batch)
    finally:
        hook.remove()
    assert seen == [answer_window(part["labels"]) for part in parts]
    assert all(k < part["labels"].shape[1] for k, part in zip(seen, parts, strict=True))


def test_rows_average_each_rows_own_mean(batch_of_four_tasks, tmp_path) -> None:
    """loss_average="rows": the mean over rows of each row's own token mean, computed on the
    length micro-batches; by hand, each row alone through the model with HF's loss."""
    collator, rows, model = batch_of_four_tasks
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = LengthSplitTrainer(model=model, args=args, loss_average="rows")
    batch = collator(rows)
    loss = float(trainer.compute_loss(model, batch).detach())
    with torch.no_grad():
        alone = [float(model(**collator([row])).loss) for row in rows]
    assert loss == pytest.approx(sum(alone) / len(alone), rel=1e-5)
    # Not the token mean: the tasks' answers differ in length, so the two averages differ.
    tokens = float(Trainer.compute_loss(trainer, model, batch).detach())
    assert abs(loss - tokens) > 1e-3


def test_an_unknown_loss_average_is_refused(tmp_path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="loss_average must be 'tokens' or 'rows'"):
        LengthSplitTrainer(model=torch.nn.Linear(1, 1), args=args, loss_average="words")
