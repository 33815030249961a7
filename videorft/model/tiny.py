"""The embedded default model: a tiny, randomly initialised Qwen2.5-VL, built offline.

Why it exists: the pipeline (frames -> dataset -> GRPO -> evaluation) must run end to end with
no network, no licence and no GPU, and every code path a real checkpoint takes must run in
tests. So this module builds, from nothing, a checkpoint folder that is a *real* Qwen2.5-VL in
everything but size: the same model class (``Qwen2_5_VLForConditionalGeneration``), the same
processor classes, Qwen2.5's special tokens in Qwen's order with the config's ids pointing at
them, Qwen2.5-VL's chat template, a model vocabulary padded past the tokenizer's (as Qwen pads
151,665 tokens to 152,064), multimodal RoPE with absolute time (``tokens_per_second`` = 2),
window attention in the vision tower. Its outputs are noise: it is a stand-in for
``Qwen/Qwen2.5-VL-7B-Instruct``, loaded through the same Auto classes.

The tokenizer is a byte-level BPE with Qwen2's pre-tokenizer, trained here with the
``tokenizers`` library on a small corpus (the project's prompt wording and answer formats, by
default), so prompts and answers tokenise into a realistic number of tokens and round-trip
exactly (byte-level BPE is lossless).

Determinism: the same ``spec``, ``seed`` and ``corpus`` give byte-identical files on the same
library versions (weights, tokenizer, processor and configs alike; checked in the tests). The
tokenizer does not depend on the seed at all: BPE training is deterministic, so a different
seed changes only ``model.safetensors`` and the provenance file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from videorft.model.tiny_spec import TinyModelSpec

PROVENANCE_FILE = "videorft_tiny_model.json"

# Qwen2.5's added tokens, in vocabulary order (ids 151643.. in the real tokenizer; here they
# follow the trained BPE vocabulary in the same order). The first 14 are special.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
NON_SPECIAL_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
EOS_TOKEN = "<|im_end|>"  # ends an assistant turn: what generation stops on
PAD_TOKEN = "<|endoftext|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2-VL / Qwen2.5-VL-Instruct's chat template: a default system turn, and each
# {"type": "video"} part rendered as <|vision_start|><|video_pad|><|vision_end|> (the processor
# then expands the single <|video_pad|> to one token per merged patch).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# --------------------------------------------------------------------------- corpus


def default_corpus() -> list[str]:
    """Text the tokenizer is trained on: the project's prompts, answers and chat scaffolding.

    Built from the real prompt builders (so the wording can never drift from what training
    feeds the model) over the synthetic source's vocabulary, plus the answer formats the
    rewards parse: times ``12.54 to 17.83``, letters A-G, ``<glue>`` spans, box lists.
    """
    from videorft.prompts import THINKING, build_prompt, format_box, format_options
    from videorft.records import OPTION_LETTERS
    from videorft.sources.synthetic import COLOURS, DIRECTIONS, SHAPES

    colours = sorted(COLOURS)
    texts: list[str] = [THINKING]
    for i, (colour, shape) in enumerate((c, s) for c in colours for s in SHAPES):
        box = [round((i * 0.037) % 0.9, 2), round((i * 0.053) % 0.9, 2), 0.95, 0.97]
        options = [f"{c} {s}" for c, s in zip(colours[i % 3 :], SHAPES, strict=False)]
        records = [
            {"task": "temporal_grounding", "inputs": {"query": f"the {colour} {shape} appears"}},
            {"task": "tracking", "inputs": {"object": f"{colour} {shape}"}, "solution": [box]},
            {"task": "grounded_qa", "inputs": {
                "question": f"What colour is the {shape} that appears for a while?",
                "options": colours[:4]}},
            {"task": "mcq", "inputs": {
                "question": f"In which direction does the {colour} {shape} move?",
                "options": list(DIRECTIONS)}},
            {"task": "mcq", "inputs": {"question": "Which shape is shown?", "options": options}},
        ]
        for record in records:
            for thinking in (True, False):
                # In the chat scaffolding the template wraps it in, so "system", "user" and
                # the default system prompt are frequent enough to become merges too.
                prompt = build_prompt(record, thinking=thinking)
                texts.append(f"system\n{DEFAULT_SYSTEM_PROMPT}\nuser\n{prompt}\nassistant\n")
    for i in range(200):  # times with two decimals, as the answers carry them
        start, end = (i * 7.31) % 60, (i * 7.31) % 60 + 1 + (i * 3.17) % 20
        texts.append(f"<answer>{start:.2f} to {end:.2f}</answer>")
        texts.append(f"<think>The event starts at <timestep>{start:.2f}</timestep>.</think>")
        texts.append(f"<glue>[({start:.1f}, {end:.1f}), ({end:.1f}, {end + 2.5:.1f})]</glue>")
        box = [(i * k * 0.0137) % 1 for k in (1, 2, 3, 4)]
        texts.append(f"<answer>[{format_box(box)}, {format_box(box[::-1])}]</answer>")
    for letter in OPTION_LETTERS:
        texts.append(f"<answer>{letter}</answer><glue>[(5.2, 10.4)]</glue>")
    texts.append(format_options([f"option {letter}" for letter in OPTION_LETTERS]))
    texts.extend(str(n) for n in range(1000))
    return texts


# --------------------------------------------------------------------------- components


def build_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """A Qwen2Tokenizer whose BPE is trained on ``corpus``, with Qwen2.5's added tokens.

    Same normaliser (NFC), pre-tokenizer (Qwen2's split regex, then byte-level) and decoder as
    the real Qwen2.5 tokenizer, so text splits the same way, only into a smaller vocabulary.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    backend = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                            fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    backend.train_from_iterator(list(corpus), trainer=trainer)
    # Added after training, so they follow the BPE vocabulary in Qwen's order.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t in NON_SPECIAL_ADDED_TOKENS])
    return Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        bos_token=None,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN)],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,  # decoding must give back exactly what was encoded
    )


def build_processor(tokenizer: Any, spec: TinyModelSpec) -> Any:
    """Qwen2.5-VL's processor (image + video processors, tokenizer, chat template)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    common = {
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "merge_size": spec.spatial_merge_size,
    }
    image_processor = Qwen2VLImageProcessor(
        min_pixels=spec.image_min_pixels, max_pixels=spec.image_max_pixels, **common
    )
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=spec.video_min_pixels,
        max_pixels=spec.video_max_pixels,
        # The frame store already sampled and sized the frames by qwen_vl_utils' rules; these
        # only matter to callers that pass raw videos. True = the reference's pixel budget (and
        # no deprecation warning from transformers 5.24 on every call).
        do_sample_frames=False,
        cap_pixels_per_frame=True,
        **common,
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def build_config(spec: TinyModelSpec, tokenizer: Any) -> Any:
    """Qwen2_5_VLConfig for ``spec``, with token ids read from ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    def token_id(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    vocab = -(-len(tokenizer) // spec.vocab_multiple) * spec.vocab_multiple
    text_config = {
        "vocab_size": vocab,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "max_window_layers": spec.num_hidden_layers,
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": list(spec.mrope_section),
            "rope_theta": spec.rope_theta,
        },
        "bos_token_id": token_id(PAD_TOKEN),  # Qwen: bos = pad = <|endoftext|>
        "eos_token_id": token_id(EOS_TOKEN),
        "pad_token_id": token_id(PAD_TOKEN),
    }
    vision_config = {
        "depth": spec.vision_depth,
        "hidden_size": spec.vision_hidden_size,
        "intermediate_size": spec.vision_intermediate_size,
        "num_heads": spec.vision_num_heads,
        "out_hidden_size": spec.hidden_size,
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "spatial_merge_size": spec.spatial_merge_size,
        "tokens_per_second": spec.tokens_per_second,
        "window_size": spec.window_size,
        "fullatt_block_indexes": list(spec.fullatt_block_indexes),
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=False,  # as Qwen2.5-VL-7B
    )


# --------------------------------------------------------------------------- build


def _looks_like_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / PROVENANCE_FILE).is_file()


def build_tiny_model(
    out_dir: Path,
    *,
    spec: TinyModelSpec = TinyModelSpec(),
    seed: int = 0,
    corpus: Iterable[str] | None = None,
) -> Path:
    """Write a tiny Qwen2.5-VL checkpoint (weights, configs, processor) to ``out_dir``.

    Built in a temp folder beside ``out_dir`` and renamed into place, so a killed build never
    leaves a half checkpoint under the final name. An existing ``out_dir`` is replaced only if
    it is empty or holds a checkpoint (a ``config.json``); anything else raises
    FileExistsError rather than deleting a folder that is not ours. Returns ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    if out_dir.exists() and not (
        out_dir.is_dir() and (not any(out_dir.iterdir()) or _looks_like_model_dir(out_dir))
    ):
        raise FileExistsError(f"{out_dir}: exists and is not a model folder; not replacing it")
    texts = list(default_corpus() if corpus is None else corpus)
    if not texts:
        raise ValueError("the tokenizer corpus is empty")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        tokenizer = build_tokenizer(texts, spec.bpe_vocab_size)
        processor = build_processor(tokenizer, spec)
        config = build_config(spec, tokenizer)
        # A private RNG stream: same seed, same weights, and the caller's RNG is left alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2_5_VLForConditionalGeneration(config)
        model.generation_config = GenerationConfig(
            bos_token_id=config.text_config.bos_token_id,
            eos_token_id=[config.text_config.eos_token_id, config.text_config.pad_token_id],
            pad_token_id=config.text_config.pad_token_id,
        )
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        corpus_sha = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
        provenance = {
            "builder": "videorft.model.tiny.build_tiny_model",
            "seed": seed,
            "spec": spec.as_dict(),
            "corpus_sha256": corpus_sha,
            "corpus_default": corpus is None,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "tokenizer_size": len(tokenizer),
        }
        (tmp / PROVENANCE_FILE).write_text(
            json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        # mkdtemp makes the folder 0700 and the safetensors writer its file 0600: a checkpoint
        # is meant to be shared (DVC cache, other users), so make it world-readable.
        os.chmod(tmp, 0o755)
        for path in tmp.iterdir():
            os.chmod(path, 0o644)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _replace_dir(new: Path, dest: Path) -> None:
    """Move ``new`` to ``dest``; an existing ``dest`` is swapped out first, then deleted."""
    if not dest.exists():
        os.replace(new, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
    os.replace(dest, old / "previous")
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(old / "previous", dest)  # put the previous checkpoint back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
