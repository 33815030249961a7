"""The tiny model's sizes: a plain dataclass with no dependencies, so params.py can take its
defaults and checks from here (`model.tiny`) without importing the builder."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TinyModelSpec:
    """Sizes of the tiny Qwen2.5-VL. Defaults: 256 K parameters, ~1 s to build (after imports).

    Fixed by Qwen2.5-VL and not configurable: the vision tower's output width equals the text
    ``hidden_size`` (its merger feeds the language model), ``rope_type`` is multimodal RoPE.
    """

    # Language model.
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2  # grouped-query attention, as in every Qwen2.5
    intermediate_size: int = 128
    # Multimodal RoPE split of the rotary half-dimension into (time, height, width); must sum to
    # head_dim / 2 (Qwen2.5-VL-7B: [16, 24, 24] for head_dim 128; same proportions here).
    mrope_section: tuple[int, int, int] = (2, 3, 3)
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768
    # Vision tower.
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_heads: int = 2
    # Window attention everywhere except these blocks (Qwen2.5-VL: every 8th of 32). With depth
    # 2 one block of each kind runs, so both attention paths are exercised.
    fullatt_block_indexes: tuple[int, ...] = (1,)
    window_size: int = 112  # pixels; 112 / 14 / 2 = 4 x 4 merged patches, as in Qwen2.5-VL
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    tokens_per_second: int = 2  # absolute-time RoPE: temporal ids per second of video
    # Tokenizer and vocabulary.
    bpe_vocab_size: int = 1024  # BPE target size incl. the 256 byte symbols (an upper bound)
    vocab_multiple: int = 64  # model vocab = len(tokenizer) rounded up to this (Qwen pads too)
    # Processor. Video frames come pre-resized from the frame store (sides multiples of 28, at
    # least params' extract_frames.min_pixels and at most its max_pixels), so with these bounds
    # smart_resize maps every stored frame to itself even if a caller forgets do_resize=False.
    video_min_pixels: int = 4 * 28 * 28
    video_max_pixels: int = 768 * 28 * 28
    image_min_pixels: int = 56 * 56  # Qwen2.5-VL's image defaults
    image_max_pixels: int = 28 * 28 * 1280

    def __post_init__(self) -> None:
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append("hidden_size must be divisible by num_attention_heads")
        elif 2 * sum(self.mrope_section) != self.hidden_size // self.num_attention_heads:
            problems.append(
                f"mrope_section {list(self.mrope_section)} must sum to head_dim / 2 = "
                f"{self.hidden_size // self.num_attention_heads // 2}"
            )
        if len(self.mrope_section) != 3:
            problems.append("mrope_section needs three parts (time, height, width)")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append("num_attention_heads must be divisible by num_key_value_heads")
        if self.vision_hidden_size % self.vision_num_heads:
            problems.append("vision_hidden_size must be divisible by vision_num_heads")
        elif (self.vision_hidden_size // self.vision_num_heads) % 4:
            problems.append("the vision head dim must be divisible by 4 (2-D axial RoPE)")
        if not all(0 <= i < self.vision_depth for i in self.fullatt_block_indexes):
            problems.append(f"fullatt_block_indexes must lie in [0, {self.vision_depth})")
        unit = self.patch_size * self.spatial_merge_size
        if self.window_size < unit or self.window_size % unit:
            problems.append(f"window_size must be a positive multiple of {unit}")
        if self.bpe_vocab_size < 257:
            problems.append("bpe_vocab_size must exceed the 256 byte symbols")
        if not 0 < self.video_min_pixels <= self.video_max_pixels:
            problems.append("need 0 < video_min_pixels <= video_max_pixels")
        if problems:
            raise ValueError("invalid TinyModelSpec: " + "; ".join(problems))

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
