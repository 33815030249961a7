"""Qwen2-VL-style multimodal rope positions remembered per row, so GRPO computes them once.

Why: Qwen2.5-VL's ``get_rope_index`` walks every row's tokens in Python (runs of text and video
tokens, one ``arange`` or grid of positions per run). GRPO's shared-prompt passes call it for
the same rows up to 2 + ``num_iterations`` times per generation batch (old policy, reference,
each loss iteration, in shuffled orders): about 6% of a CPU GRPO step at G = 8 (py-spy). A
row's positions depend only on its real tokens (ids and token types, padding left out), its
one video's grid and time spacing, and the model config, so :class:`RowPositions` keeps them
per row and places them in each batch's padding the way ``get_rope_index`` does (zeros at
padded columns): the same integers, bit for bit. (Tried for the warm start too, where rows come
back every epoch: the rope index is ~3% of its step there, and paired benchmark runs gave
0.90-1.11x, so it is not installed there.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

RopeIndex = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def find_rope_index(model: torch.nn.Module) -> RopeIndex:
    """The model's ``get_rope_index`` (Qwen2/2.5-VL), found through DDP/PEFT wrappers."""
    for module in model.modules():
        if callable(getattr(type(module), "get_rope_index", None)):
            return module.get_rope_index
    raise TypeError(f"{type(model).__name__} has no get_rope_index: shared-prompt passes need "
                    "a Qwen2-VL-style model with multimodal RoPE")


class RowPositions:
    """Per-row memo of a ``get_rope_index`` for rows with one video each (see module doc).

    It grows with every new row: :meth:`clear` it for each new batch of rows (GRPO: each
    generation batch). Rows are kept on the CPU. One instance serves one model config: a policy
    and its reference share one.
    """

    def __init__(self) -> None:
        self._rows: dict[bytes, tuple[np.ndarray, torch.Tensor]] = {}

    def clear(self) -> None:
        self._rows.clear()

    def __len__(self) -> int:
        return len(self._rows)

    def bind(self, rope_index: RopeIndex) -> RopeIndex:
        """``rope_index`` served from this memo; a call it cannot serve (images, or not one
        video per row) goes to ``rope_index`` itself."""

        def positions(input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor | None = None,
                      image_grid_thw: torch.Tensor | None = None,
                      video_grid_thw: torch.Tensor | None = None,
                      second_per_grid_ts: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            call = {"mm_token_type_ids": mm_token_type_ids, "image_grid_thw": image_grid_thw,
                    "video_grid_thw": video_grid_thw, "second_per_grid_ts": second_per_grid_ts,
                    "attention_mask": attention_mask, **kwargs}
            if (image_grid_thw is not None or kwargs or mm_token_type_ids is None
                    or video_grid_thw is None or second_per_grid_ts is None
                    or video_grid_thw.size(0) != input_ids.size(0)):
                return rope_index(input_ids, **call)
            return self._positions(rope_index, input_ids, call)

        return positions

    def _positions(self, rope_index: RopeIndex, input_ids: torch.Tensor,
                   call: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        # numpy on the host: per-row masking and placing cost microseconds there.
        mask = call["attention_mask"]
        ids = input_ids.detach().cpu().numpy()
        types = call["mm_token_type_ids"].detach().cpu().numpy()
        real = (np.ones(ids.shape, dtype=bool) if mask is None
                else mask.detach().cpu().numpy().astype(bool))
        grids = call["video_grid_thw"].detach().cpu().numpy()
        times = call["second_per_grid_ts"].detach().cpu().to(torch.float64).numpy().reshape(-1)
        keys = [b"|".join((ids[row][real[row]].tobytes(), types[row][real[row]].tobytes(),
                           grids[row].tobytes(), times[row].tobytes()))
                for row in range(ids.shape[0])]
        missing = [row for row, key in enumerate(keys) if key not in self._rows]
        if missing:
            index = torch.tensor(missing, device=input_ids.device)
            picked = {name: value[index] for name, value in call.items()
                      if isinstance(value, torch.Tensor)}
            computed, deltas = rope_index(input_ids[index], **{**call, **picked})
            computed, deltas = computed.cpu().numpy(), deltas.cpu()
            for number, row in enumerate(missing):
                self._rows[keys[row]] = (computed[:, number][:, real[row]].copy(),
                                         deltas[number].clone())
        positions = np.zeros((3, *ids.shape), dtype=ids.dtype)
        deltas = []
        for row, key in enumerate(keys):
            rows, delta = self._rows[key]
            positions[:, row, real[row]] = rows
            deltas.append(delta)
        device = input_ids.device
        return (torch.from_numpy(positions).to(device, input_ids.dtype),
                torch.stack(deltas).to(device))
