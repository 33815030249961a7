"""Qwen2.5-VL's vision attention with its windows in one attention call per window size.

Why: without flash-attn, transformers' ``Qwen2_5_VLVisionAttention`` splits the patch sequence
at every window (and, in the full-attention blocks, at every frame) and calls attention once per
piece. A video of 4 temporal patches in a batch of 16 is 64 calls per block, each on a 32-patch
window, so the calls' fixed cost is most of the vision tower's attention time on a CPU. Every
window of a frame grid tiled by the window size has the same length, so the pieces stack into
one batch: one call per distinct length does the same arithmetic on the same numbers.

The outputs and gradients are bit-for-bit those of the per-window loop
(``tests/test_model.py`` checks both), so a run's numbers do not change; the default's warm
start gets 1.14x steps/s on 2 cores (``benchmarks/vision_windows.py``). With flash-attn the stock
forward already runs every window in one varlen call and is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as qwen
from transformers.utils.generic import is_flash_attention_requested


class WindowBatchedVisionAttention(qwen.Qwen2_5_VLVisionAttention):
    """``Qwen2_5_VLVisionAttention`` whose equal-length windows share one attention call."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        max_seqlen: int | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if is_flash_attention_requested(self.config):
            return super().forward(hidden_states, cu_seqlens, position_embeddings,
                                   max_seqlen=max_seqlen, **kwargs)
        seq_length = hidden_states.shape[0]
        query, key, value = (
            self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1)
            .permute(1, 0, 2, 3).unbind(0)
        )
        cos, sin = position_embeddings
        query, key = qwen.apply_rotary_pos_emb_vision(query, key, cos, sin)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, qwen.eager_attention_forward)

        starts = cu_seqlens[:-1].tolist()
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
        if len(set(lengths)) == 1:
            attn_output = self._attend(attention, query, key, value, lengths[0], **kwargs)
        else:  # edge windows cut short, frames of unlike sizes: a call per length, scattered
            attn_output = query.new_zeros(seq_length, self.num_heads, query.shape[-1])
            for length in sorted(set(lengths) - {0}):
                positions = torch.tensor(
                    [start + offset for start, n in zip(starts, lengths, strict=True)
                     if n == length
                     for offset in range(length)], device=query.device)
                attended = self._attend(attention, query[positions], key[positions],
                                        value[positions], length, **kwargs)
                attn_output = attn_output.index_copy(0, positions, attended)
        return self.proj(attn_output.reshape(seq_length, -1).contiguous())

    def _attend(self, attention: Any, query: torch.Tensor, key: torch.Tensor,
                value: torch.Tensor, length: int, **kwargs: Any) -> torch.Tensor:
        """Attention within consecutive windows of ``length`` patches: (n, heads, dim) in and
        out, the windows as the batch dimension of one call."""
        windows = query.shape[0] // length
        query, key, value = (tensor.reshape(windows, length, self.num_heads, -1).transpose(1, 2)
                             for tensor in (query, key, value))
        attended, _ = attention(self, query, key, value, attention_mask=None,
                                scaling=self.scaling,
                                dropout=0.0 if not self.training else self.attention_dropout,
                                is_causal=False, **kwargs)
        return attended.reshape(windows * length, self.num_heads, -1)  # (b, len, heads, dim)


def batch_vision_windows(model: torch.nn.Module) -> int:
    """Switch every Qwen2.5-VL vision attention module in ``model`` to
    :class:`WindowBatchedVisionAttention` (same parameters, same state dict keys); returns how
    many were switched. Other architectures are left as they are (0)."""
    switched = 0
    for module in model.modules():
        if type(module) is qwen.Qwen2_5_VLVisionAttention:
            module.__class__ = WindowBatchedVisionAttention
            switched += 1
    return switched
