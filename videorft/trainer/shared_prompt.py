"""Shared-prompt passes and generation: each group's prompt (and its video) runs once, not G times.

Why: in GRPO the G completions of a group share one prompt. A video prompt is thousands of
tokens and a completion a few hundred, yet a plain pass runs the vision tower and the language
model over that prompt once per completion. Here the prompt runs once per group, its per-layer
keys/values are expanded to the group's rows, and only the completion tokens run on top; the
gradient flows back through the keys/values into the prompt pass and the vision tower. Cost:
prompt + G x completion instead of G x (prompt + completion).

Exactness contract: :func:`shared_prompt_logps` returns what :func:`plain_logps` (the forward
``VideoGRPOTrainer`` runs otherwise) returns, up to float rounding: same log-probs and entropies
(zero where the completion is padding), same gradients. Details that make it so, each of which
fails silently when wrong:

* Split point. The prompt pass takes prompt tokens ``[0, P-1)``; the completion pass takes
  ``[P-1, P+C)``, i.e. the last prompt token plus the completion. The last prompt token's
  output predicts the first completion token, so the completion pass can score every completion
  token with the model's own fused head (``labels=..., fused_lm_head=True``, TRL's
  ``add_fused_lm_head``), and temperature, log-prob and entropy are computed by the very code the
  plain pass uses. (Needs left-padded prompts: column P-1 is a real token in every row.)
* Positions. Qwen2.5-VL's multimodal RoPE positions of a token depend on the whole row (video
  grid, absolute time, text after the video), and without ``position_ids`` a forward with a
  cache would fall back to ``rope_deltas`` left over from the last call. So both passes get
  explicit 3-D positions, sliced from the model's own ``get_rope_index`` over the full rows with
  the same token types and mask the plain forward uses (cheap, no forward).
* Attention mask. The completion pass gets the full ``[prompt mask, completion mask]``; the cache
  tells the mask builder that the first P-1 key positions are past, so prompt left padding and
  completion right padding are masked exactly as in the plain forward.
* Cache under gradient checkpointing. transformers' ``GradientCheckpointingLayer`` drops the
  cache in training unless the layer sets ``_can_checkpoint_with_cache``, because a checkpoint
  recompute would write the cache a second time. Both caches here are replay-safe (the prompt
  pass's *overwrites* its per-layer keys/values, the completion pass's returns
  prefix + new states without storing anything), so the flag is set for the duration of the
  passes. Reentrant checkpointing runs layers under ``no_grad`` and would cut the keys/values
  from the graph (no gradient from the completions into the prompt or the vision tower): refused.
* Expansion. Prefix keys/values ``[U, heads, P-1, dim]`` go to rows with ``index_select`` by
  each row's group: differentiable, and rows of a group need not be contiguous. A fresh cache
  per pass, never mutated, so the G completions cannot see each other's states.

* Completion lengths. Completions arrive right-padded to the longest of the generation batch.
  Groups whose longest completions differ (tracking's ~200 tokens beside temporal grounding's
  ~16) run in separate completion passes over the one prompt pass's keys/values, each trimmed
  to its own longest completion, and the results are padded back with zeros.

Generation (:func:`shared_prompt_generate`) prefills the same way and lets ``generate`` decode
from the expanded cache; its contract is the plain ``generate``'s tokens.

A group is rows with identical prompt ids *and* identical video (:func:`prompt_group_ids`);
rows are checked against their group's first row before use (ids, mask, grid, time spacing).
Plain torch/transformers: nothing here imports TRL (the fused head is a kwarg convention).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer, StaticCache
from transformers.modeling_layers import GradientCheckpointingLayer

from videorft.model.row_positions import find_rope_index
from videorft.trainer.micro_batches import MIN_FILL, length_groups

#: Token type Qwen2.5-VL's ``get_rope_index`` expects at ``<|video_pad|>`` positions.
VIDEO_TOKEN_TYPE = 2


def video_token_types(input_ids: torch.Tensor, video_token_id: int,
                      completion_len: int) -> torch.Tensor:
    """``mm_token_type_ids`` for prompt+completion rows: 2 at prompt video pads, 0 elsewhere.

    Without it transformers 5.24 falls back to 1-D positions; completions never hold video
    (the trainer suppresses ``<|video_pad|>`` in sampling), so their columns are 0.
    """
    types = (input_ids == video_token_id).long() * VIDEO_TOKEN_TYPE
    if completion_len:
        types[:, -completion_len:] = 0
    return types


def plain_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    *,
    pixel_values_videos: torch.Tensor,
    video_grid_thw: torch.Tensor,
    second_per_grid_ts: torch.Tensor,
    video_token_id: int,
    compute_entropy: bool = False,
    compute_aux_loss: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One forward over full prompt+completion rows: TRL 1.16's loop body, plus the video.

    ``model`` must carry TRL's fused head (``add_fused_lm_head``). Returns per-token
    (log-probs, entropies or None, aux loss or None) of the last ``logits_to_keep`` columns,
    zero where ``attention_mask`` is 0.
    """
    model_inputs: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "mm_token_type_ids": video_token_types(input_ids, video_token_id, logits_to_keep),
        "pixel_values_videos": pixel_values_videos,
        "video_grid_thw": video_grid_thw,
        "second_per_grid_ts": second_per_grid_ts,
    }
    if compute_aux_loss:
        model_inputs["output_router_logits"] = True
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :-logits_to_keep] = -100
    outputs = model(**model_inputs, labels=labels, fused_lm_head=True)
    entropy = outputs.entropy[:, -logits_to_keep:] if compute_entropy else None
    aux_loss = outputs.aux_loss if compute_aux_loss else None
    return outputs.log_probs[:, -logits_to_keep:], entropy, aux_loss


# ----------------------------------------------------------------------------- groups


def prompt_group_ids(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    pixel_values_videos: Sequence[torch.Tensor],
    video_grid_thw: torch.Tensor,
    second_per_grid_ts: torch.Tensor,
) -> torch.Tensor:
    """Group id per row (0, 1, ... by first appearance): same prompt ids and same video.

    Same text with another video is another group. Videos are compared by content (grid, time
    spacing, then pixels), so rows processed separately from one video still share.
    """
    keys: dict[tuple[Any, ...], list[int]] = {}
    first_row: list[int] = []
    ids = []
    for row in range(prompt_ids.size(0)):
        key = (
            tuple(prompt_ids[row][prompt_mask[row].bool()].tolist()),
            tuple(video_grid_thw[row].tolist()),
            float(second_per_grid_ts[row]),
        )
        match = None
        for group in keys.setdefault(key, []):
            if torch.equal(pixel_values_videos[first_row[group]], pixel_values_videos[row]):
                match = group
                break
        if match is None:
            match = len(first_row)
            first_row.append(row)
            keys[key].append(match)
        ids.append(match)
    return torch.tensor(ids, dtype=torch.long, device=prompt_ids.device)


def group_rows(group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first row of each group ``[U]``, each row's group index in ``0..U-1`` ``[B]``)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    count = int(inverse.max()) + 1 if inverse.numel() else 0
    rows = torch.arange(inverse.numel(), device=inverse.device)
    first = torch.full((count,), inverse.numel(), dtype=torch.long, device=inverse.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")
    return first, inverse


def _check_groups(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                  video_grid_thw: torch.Tensor, second_per_grid_ts: torch.Tensor,
                  first: torch.Tensor, inverse: torch.Tensor) -> None:
    """Rows must match their group's first row: a wrong group id would silently mix prompts."""
    leader = first[inverse]
    same = (
        torch.equal(prompt_ids, prompt_ids[leader])
        and torch.equal(prompt_mask, prompt_mask[leader])
        and torch.equal(video_grid_thw, video_grid_thw[leader])
        and torch.equal(second_per_grid_ts, second_per_grid_ts[leader])
    )
    if not same:
        raise ValueError("rows of a prompt group differ in prompt ids, mask or video grid/time; "
                         "group ids must come from prompt_group_ids")


# ----------------------------------------------------------------------------- caches


class _RecordingLayer(DynamicLayer):
    """Prompt pass: keeps the layer's keys/values. Overwrites rather than appends, so a
    checkpoint recompute leaves it as it was (and the recompute attends over the same keys)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states, value_states
        return key_states, value_states


class _PrefixLayer(DynamicLayer):
    """Completion pass: the prompt's (expanded) keys/values, read-only. ``update`` returns
    prefix + new states without storing them: every call, recompute included, sees one past."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.device = keys.device
        self.keys, self.values = keys, values
        self.is_initialized = True
        self.reads = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        return (torch.cat([self.keys, key_states], dim=-2),
                torch.cat([self.values, value_states], dim=-2))


@contextlib.contextmanager
def _cache_through_checkpointing(model: torch.nn.Module) -> Iterator[None]:
    """Let checkpointed layers keep the (replay-safe) caches; refuse reentrant checkpointing."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if torch.is_grad_enabled():
        for layer in layers:
            if not (layer.gradient_checkpointing and layer.training):
                continue
            func = getattr(layer, "_gradient_checkpointing_func", None)
            if (getattr(func, "keywords", None) or {}).get("use_reentrant") is not False:
                raise ValueError(
                    "shared-prompt passes need non-reentrant gradient checkpointing "
                    "(gradient_checkpointing_kwargs={'use_reentrant': False}): reentrant "
                    "checkpointing runs layers without grad, so the prompt and the vision tower "
                    "would get no gradient from the completions. Or turn shared_prompt off.")
    saved = [layer.__dict__.get("_can_checkpoint_with_cache") for layer in layers]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer, value in zip(layers, saved, strict=True):
            if value is None:
                del layer._can_checkpoint_with_cache
            else:
                layer._can_checkpoint_with_cache = value


# ----------------------------------------------------------------------------- passes


def shared_prompt_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    logits_to_keep: int,
    *,
    group_ids: torch.Tensor,
    pixel_values_videos: Sequence[torch.Tensor],
    video_grid_thw: torch.Tensor,
    second_per_grid_ts: torch.Tensor,
    video_token_id: int,
    compute_entropy: bool = False,
    prefix_model: torch.nn.Module | None = None,
    rope_index: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
    min_fill: float = MIN_FILL,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`plain_logps`'s (log-probs, entropies) with one prompt pass per group.

    Rows are left-padded prompts (``P`` columns) followed by right-padded completions
    (``logits_to_keep`` columns); ``pixel_values_videos[i]`` etc. are row i's video, and
    ``group_ids[i]`` its group (:func:`prompt_group_ids`). ``model`` must carry TRL's fused head.
    ``prefix_model`` runs the prompt pass (default ``model``; pass the module inside a DDP
    wrapper so DDP sees one forward per backward). ``rope_index`` defaults to
    :func:`find_rope_index`. Groups whose longest completions are within ``min_fill`` of each
    other share a completion pass (0: one pass for all, as wide as the widest). See the module
    docstring for why each step is as it is.
    """
    rows, length = input_ids.shape
    prompt_len = length - logits_to_keep
    if prompt_len < 2 or logits_to_keep < 1:
        raise ValueError(f"need >= 2 prompt and >= 1 completion columns, got {prompt_len} and "
                         f"{logits_to_keep}")
    if len(pixel_values_videos) != rows or group_ids.numel() != rows:
        raise ValueError(f"{rows} rows, {len(pixel_values_videos)} videos, "
                         f"{group_ids.numel()} group ids")
    cut = prompt_len - 1  # the prompt pass stops before the last prompt token
    if not bool(attention_mask[:, cut].all()):
        raise ValueError("prompts must be left-padded (the last prompt column must be real)")
    first, inverse = group_rows(group_ids)
    _check_groups(input_ids[:, :prompt_len], attention_mask[:, :prompt_len], video_grid_thw,
                  second_per_grid_ts, first, inverse)
    rope_index = rope_index or find_rope_index(model)
    with torch.no_grad():
        positions, _ = rope_index(
            input_ids,
            mm_token_type_ids=video_token_types(input_ids, video_token_id, logits_to_keep),
            video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts,
            attention_mask=attention_mask,
        )

    with _cache_through_checkpointing(model):
        recorder = Cache(layer_class_to_replicate=_RecordingLayer)
        (prefix_model or model)(
            input_ids=input_ids[first, :cut],
            attention_mask=attention_mask[first, :cut],
            position_ids=positions[:, first, :cut],
            pixel_values_videos=torch.cat([pixel_values_videos[i] for i in first.tolist()]),
            video_grid_thw=video_grid_thw[first],
            second_per_grid_ts=second_per_grid_ts[first],
            cache=recorder,
            use_cache=False,  # the cache is ours; this only stops the model making another
            logits_to_keep=1,  # the prompt pass's logits are not needed
        )
        if not recorder.layers or any(layer.keys is None for layer in recorder.layers):
            raise RuntimeError("the prompt pass filled no key/value cache")
        parts = _completion_parts(attention_mask[:, prompt_len:], inverse, min_fill)
        logps, entropies, order = [], [], []
        for number, (part, width) in enumerate(parts):
            end = prompt_len + width
            prefix = [_PrefixLayer(layer.keys.index_select(0, inverse[part]),
                                   layer.values.index_select(0, inverse[part]))
                      for layer in recorder.layers]
            tail = input_ids[part, cut:end]
            labels = tail.masked_fill(attention_mask[part, cut:end] == 0, -100)
            labels[:, 0] = -100  # the last prompt token is input only
            # DDP must see one forward per backward: only the last part goes through it.
            runner = model if number == len(parts) - 1 else (prefix_model or model)
            outputs = runner(
                input_ids=tail,
                attention_mask=attention_mask[part, :end],
                position_ids=positions[:, part, cut:end],
                cache=Cache(layers=prefix),
                labels=labels,
                fused_lm_head=True,
            )
            if any(layer.reads == 0 for layer in prefix):
                raise RuntimeError("the completion pass did not read the prompt's keys/values")
            padding = (0, logits_to_keep - width)  # zero where the completion is padding
            logps.append(torch.nn.functional.pad(outputs.log_probs, padding))
            if compute_entropy:
                entropies.append(torch.nn.functional.pad(outputs.entropy, padding))
            order.append(part)
    back = torch.argsort(torch.cat(order))  # rows in their batch order again
    entropy = torch.cat(entropies)[back] if compute_entropy else None
    return torch.cat(logps)[back], entropy


def _completion_parts(completion_mask: torch.Tensor, inverse: torch.Tensor,
                      min_fill: float) -> list[tuple[torch.Tensor, int]]:
    """(rows, width) of each completion pass: whole groups of similar length, a group's longest
    completion at least ``min_fill`` x the part's ``width`` (its longest, at least 1).

    Why: completions are right-padded to the longest of the whole generation batch, so a
    temporal-grounding group (~16 tokens) beside a tracking one (~200) would be computed at
    ~200 tokens. Each part is trimmed to its own longest completion.
    """
    lengths = completion_mask.sum(dim=1)
    count = int(inverse.max()) + 1
    longest = torch.zeros(count, dtype=lengths.dtype, device=lengths.device)
    longest = longest.scatter_reduce(0, inverse, lengths, reduce="amax")
    widths = [max(int(n), 1) for n in longest]
    return [(torch.nonzero(torch.isin(inverse, torch.tensor(groups, device=inverse.device)))
             .squeeze(1), max(widths[g] for g in groups))
            for groups in length_groups(widths, min_fill)]


# ------------------------------------------------------------------------------ generation


def shared_prompt_generate(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    group_ids: torch.Tensor,
    pixel_values_videos: Sequence[torch.Tensor],
    video_grid_thw: torch.Tensor,
    second_per_grid_ts: torch.Tensor,
    generation_config: Any,
    mm_token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """``model.generate`` over left-padded rows, each group's prompt and video prefilled once.

    The plain call runs the vision tower and the prompt's prefill once per row, i.e. G times
    per group. Here the group's first row runs prompt tokens ``[0, P-1)`` (video included) once,
    the cache's rows are expanded to the batch (``reorder_cache`` by each row's group), the
    multimodal RoPE offsets likewise, and ``generate`` continues from that cache: its first
    forward processes the last prompt token of every row, so every sampled token, logits
    processors included, goes through the very same decoding loop, in the same batch layout
    and random stream, as the plain call's. Returns what ``generate`` returns (prompt and
    completion ids). With ``generation_config.cache_implementation == "static"`` the expanded
    prefix goes into a preallocated :class:`~transformers.StaticCache` (prompt + new tokens
    long) that ``generate`` writes in place, and may compile its decoding step.
    """
    first, inverse = group_rows(group_ids)
    _check_groups(input_ids, attention_mask, video_grid_thw, second_per_grid_ts, first, inverse)
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("shared_prompt_generate needs left-padded prompts")
    holder = find_rope_index(model).__self__  # the module that keeps ``rope_deltas``
    prefill: dict[str, Any] = {
        "input_ids": input_ids[first, :-1],
        "attention_mask": attention_mask[first, :-1],
        "pixel_values_videos": torch.cat([pixel_values_videos[int(i)] for i in first]),
        "video_grid_thw": video_grid_thw[first],
        "second_per_grid_ts": second_per_grid_ts[first],
    }
    continued: dict[str, Any] = {}
    if mm_token_type_ids is not None:
        prefill["mm_token_type_ids"] = mm_token_type_ids[first, :-1]
        continued["mm_token_type_ids"] = mm_token_type_ids
    with torch.no_grad():
        out = model(**prefill, use_cache=True, logits_to_keep=1)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        if generation_config.cache_implementation == "static":
            cache = _expanded_static_cache(model, cache, inverse, input_ids.size(1)
                                           + generation_config.max_new_tokens)
            generation_config = copy.copy(generation_config)  # the cache is given, not made
            generation_config.cache_implementation = None
        else:
            cache.reorder_cache(inverse)
        holder.rope_deltas = holder.rope_deltas[inverse]
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                              generation_config=generation_config, **continued)


def _expanded_static_cache(model: torch.nn.Module, prefix: Cache, rows: torch.Tensor,
                           length: int) -> StaticCache:
    """A static cache of ``length`` positions holding ``prefix``'s rows ``rows`` in front."""
    static = StaticCache(config=model.config, max_cache_len=length)
    for source, target in zip(prefix.layers, static.layers, strict=True):
        target.update(source.keys[rows], source.values[rows])
    return static
