"""Split a left-padded batch into micro-batches of similar length, so padding is not computed.

A multi-task batch pads every row to its longest: with tracking answers (~200 tokens) beside
temporal-grounding ones (~16), most of a warm-start step's tokens are padding. Rows of similar
length go into one micro-batch, trimmed to its own longest row. The micro-batches' losses add
up to the batch's loss (the mean over its answer tokens, or over its rows: see
:class:`LengthSplitTrainer`), so the gradient is the batch's (up to float summation order).

Each micro-batch also projects only its answer window onto the vocabulary (:func:`answer_window`):
the loss reads the logits of the answer tokens and the one before each, and a warm-start row is
mostly prompt and video (an answer is 7-22 tokens of ~200).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import Trainer

#: A micro-batch's shortest row is at least this share of its longest (at most 20% padding).
MIN_FILL = 0.8
#: The label of a token the loss skips (prompt, video, padding): PyTorch's and HF's.
IGNORE_INDEX = -100
#: Per-video entries of a Qwen2.5-VL video batch, one row (or one patch run) per video.
_PER_VIDEO = ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")


def answer_window(labels: torch.Tensor) -> int:
    """How many positions at the end of the batch the loss reads: from the one before the
    earliest answer token (its logits predict that token) to the last; every position when no
    row has an answer."""
    answered = labels.ne(IGNORE_INDEX).any(dim=0).nonzero()
    if answered.numel() == 0:
        return labels.shape[1]
    return labels.shape[1] - max(int(answered[0]) - 1, 0)


def keep_answer_logits(batch: Mapping[str, Any]) -> dict[str, Any]:
    """``batch`` asking the model for the logits of its answer window only (HF's
    ``logits_to_keep``), with the labels trimmed to the same positions: the same loss and
    gradient, without projecting the prompt and video positions onto the vocabulary."""
    labels = batch["labels"]
    keep = answer_window(labels)
    if keep == labels.shape[1]:
        return dict(batch)
    return {**batch, "labels": labels[:, -keep:], "logits_to_keep": keep}


def length_groups(lengths: list[int], min_fill: float = MIN_FILL) -> list[list[int]]:
    """Row indices grouped so that each group's shortest is >= ``min_fill`` x its longest;
    longest group first, rows in their batch order within a group."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    for index in order:
        if groups and lengths[index] >= min_fill * lengths[groups[-1][0]]:
            groups[-1].append(index)
        else:
            groups.append([index])
    return [sorted(group) for group in groups]


def split_by_length(
    batch: Mapping[str, Any], min_fill: float = MIN_FILL
) -> list[dict[str, Any]]:
    """``batch`` as micro-batches of rows of similar length (see :func:`length_groups`), each
    trimmed to its longest row; ``[batch]`` when one group holds every row, or when the batch
    is not one video per row, left-padded, with only the entries this function knows."""
    ids, mask = batch.get("input_ids"), batch.get("attention_mask")
    grids = batch.get("video_grid_thw")
    if not isinstance(ids, torch.Tensor) or not isinstance(mask, torch.Tensor) or grids is None:
        return [dict(batch)]
    rows = ids.shape[0]
    per_token = [k for k, v in batch.items()
                 if isinstance(v, torch.Tensor) and v.shape == ids.shape]
    known = set(per_token) | set(_PER_VIDEO)
    if set(batch) - known or grids.shape[0] != rows or bool((mask[:, -1] == 0).any()):
        return [dict(batch)]  # not one video per row, right-padded, or unknown entries
    lengths = [int(n) for n in mask.sum(dim=1)]
    groups = length_groups(lengths, min_fill)
    if len(groups) == 1:
        return [dict(batch)]
    patches = grids.prod(dim=1)
    starts = torch.cumsum(patches, dim=0) - patches
    parts: list[dict[str, Any]] = []
    for group in groups:
        index = torch.tensor(group)
        width = max(lengths[i] for i in group)
        part = {name: batch[name][index, -width:] for name in per_token}
        if "pixel_values_videos" in batch:
            part["pixel_values_videos"] = torch.cat([
                batch["pixel_values_videos"][int(starts[i]):int(starts[i] + patches[i])]
                for i in group])
        part["video_grid_thw"] = grids[index]
        if "second_per_grid_ts" in batch:
            part["second_per_grid_ts"] = batch["second_per_grid_ts"][index]
        parts.append(part)
    return parts


class LengthSplitTrainer(Trainer):
    """A Trainer whose loss pass runs each batch as micro-batches of similar length.

    ``loss_average="tokens"`` (HF's loss): the parts' losses add up to the batch's mean over
    its answer tokens, so one backward gives the batch's gradient. Each part's mean is weighted
    by its share of the tokens (or, for a model whose loss takes ``num_items_in_batch``, each
    part already divides by the whole batch's count). ``"rows"``: every row's mean over its own
    answer tokens, averaged over the batch's rows (:func:`row_mean_losses`), so a task with
    long answers does not outweigh one with short answers. Evaluation (outputs asked for) runs
    the batch whole with HF's loss.
    """

    #: Project only each micro-batch's answer window onto the vocabulary (the same loss and
    #: gradient; benchmarks/warm_start_answer_logits.py turns it off for its baseline).
    answer_logits_only = True

    def __init__(self, *args: Any, loss_average: str = "tokens", **kwargs: Any) -> None:
        if loss_average not in ("tokens", "rows"):
            raise ValueError(f"loss_average must be 'tokens' or 'rows', got {loss_average!r}")
        super().__init__(*args, **kwargs)
        self.loss_average = loss_average

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if return_outputs:
            return super().compute_loss(model, inputs, return_outputs=True,
                                        num_items_in_batch=num_items_in_batch)
        parts = split_by_length(inputs)
        if self.answer_logits_only:
            parts = [keep_answer_logits(part) for part in parts]
        if self.loss_average == "rows":
            rows = inputs["labels"].shape[0]
            return sum(row_mean_losses(model, part).sum() for part in parts) / rows
        if len(parts) == 1:
            return super().compute_loss(model, parts[0], num_items_in_batch=num_items_in_batch)
        losses = [super(LengthSplitTrainer, self).compute_loss(
            model, part, num_items_in_batch=num_items_in_batch) for part in parts]
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            return sum(losses)  # each is already its tokens' sum over the batch's count
        total = _answer_tokens(inputs["labels"])
        return sum(loss * (_answer_tokens(part["labels"]) / total)
                   for loss, part in zip(losses, parts, strict=True))


def row_mean_losses(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Each row's causal-LM loss, the mean over its own answer tokens: ``[rows]``."""
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    targets = labels[:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
        reduction="none")
    counts = targets.ne(IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return per_token.sum(dim=1) / counts


def _answer_tokens(labels: torch.Tensor) -> torch.Tensor:
    """The tokens a causal LM's mean loss averages over: labels shifted by one, not ignored."""
    return labels[:, 1:].ne(IGNORE_INDEX).sum()
