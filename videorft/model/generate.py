"""Greedy answers of a video LLM for dataset rows (warm-start checks, evaluation).

One batch at a time: the rows' prompts are chat-templated with the generation prompt, their
frames come from the frame store, and :func:`videorft.model.inputs.video_inputs` turns both
into left-padded tensors (so every row's new tokens start at the same column). Generation is
greedy and stops at the end-of-turn token; only the new tokens are decoded, without special
tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from videorft.model.inputs import video_inputs

if TYPE_CHECKING:
    from videorft.video.store import FrameStore


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a generation: the model's eos id(s) plus the tokenizer's eos and
    ``<|im_end|>`` (the end of an assistant turn in Qwen's chat format)."""
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    if configured is not None:
        ids.extend(configured if isinstance(configured, list) else [configured])
    for token in (tokenizer.eos_token, "<|im_end|>"):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    return list(dict.fromkeys(ids))


def greedy_config(model: Any, tokenizer: Any, max_new_tokens: int) -> Any:
    """The model's generation config made greedy (sampling knobs cleared, so a checkpoint's
    ``temperature``/``top_p`` defaults neither apply nor warn), bounded by ``max_new_tokens``."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample = False
    config.num_beams = 1
    config.temperature = None
    config.top_p = None
    config.top_k = None
    config.max_new_tokens = int(max_new_tokens)
    config.max_length = None
    config.eos_token_id = stop_token_ids(model, tokenizer)
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config


def generate_answers(
    model: Any,
    processor: Any,
    rows: Sequence[dict[str, Any]],
    store: FrameStore,
    *,
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[str]:
    """The greedy completion of each row (dataset rows with ``prompt`` and ``frames_key``), in
    order. The model is put in eval mode for the call and its previous mode restored."""
    import torch

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be positive")
    tokenizer = processor.tokenizer
    config = greedy_config(model, tokenizer, max_new_tokens)
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                batch = list(rows[start : start + batch_size])
                inputs = video_inputs(processor, batch, store).to(model.device)
                output = model.generate(**inputs, generation_config=config)
                new_tokens = output[:, inputs["input_ids"].shape[1] :]
                answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return answers
