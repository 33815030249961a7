"""The embedded tiny Qwen2.5-VL: building, loading, tokenizer, and inputs from a real frame store.

The frame-store tests run the real data stages (synthetic videos -> extract_frames ->
build_dataset) on one video per task, so the rows and frames are exactly what training reads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import DATA_STAGES, TEST_PRESET, copy_params
from videorft.io import read_jsonl
from videorft.model import (
    ModelNotFoundError,
    TinyModelSpec,
    build_tiny_model,
    load_model_and_processor,
    row_messages,
    video_inputs,
)
from videorft.model.tiny import NON_SPECIAL_ADDED_TOKENS, PROVENANCE_FILE, SPECIAL_TOKENS
from videorft.params import load_params, update_params
from videorft.prompts import build_prompt, format_box, format_options
from videorft.stages import get_stage
from videorft.video.store import FrameStore

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="module")
def loaded(tiny_dir: Path) -> tuple[Any, Any]:
    return load_model_and_processor(tiny_dir)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], FrameStore]:
    """Dataset rows and the frame store of the real stages on one synthetic video per task."""
    root = tmp_path_factory.mktemp("data")
    path = copy_params(root)
    update_params(path, preset=TEST_PRESET, overrides=[
        "download.sources.0.options.samples_per_task="
        "{temporal_grounding: 1, tracking: 1, grounded_qa: 1, mcq: 1}",
        "build_dataset.val_fraction=0.0",
    ])
    params = load_params(path)
    for name in DATA_STAGES:
        get_stage(name)(params, root)
    rows = list(read_jsonl(root / params.paths.dataset / "train.jsonl"))
    assert len(rows) == 4
    return rows, FrameStore(root / params.paths.frames)


class _ChangedStore:
    """A frame store whose frames are inverted: same shapes and fps, different pixels."""

    def __init__(self, store: FrameStore):
        self.store = store

    def meta(self, key: str) -> dict[str, Any]:
        return self.store.meta(key)

    def load(self, key: str) -> np.ndarray:
        return 255 - np.asarray(self.store.load(key))


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _prompts() -> list[str]:
    """The project's prompts for every task, in both modes."""
    records = [
        {"task": "temporal_grounding", "inputs": {"query": "the red circle appears"}},
        {"task": "tracking", "inputs": {"object": "blue square"},
         "solution": [[0.1, 0.25, 0.3, 0.555]]},
        {"task": "grounded_qa", "inputs": {"question": "Which shape appears for a while?",
                                           "options": ["circle", "square", "triangle"]}},
        {"task": "mcq", "inputs": {"question": "How many shapes are in the video?",
                                   "options": ["1", "2", "3", "4", "5", "6", "7"]}},
    ]
    return [build_prompt(r, thinking=t) for r in records for t in (True, False)]


ANSWERS = [
    "<answer>12.54 to 17.83</answer>",
    "<think>It starts at <timestep>3.20</timestep>.</think><answer>3.20 to 9.75</answer>",
    "<answer>A</answer><glue>[(5.2, 10.4), (12.0, 15.5)]</glue>",
    "<answer>G</answer>",
    f"<answer>[{format_box([0.1, 0.5, 0.3, 0.55])}, {format_box([0.72, 0.25, 0.84, 0.43])}]"
    "</answer>",
    format_options(["left", "right", "up", "down"]),
    "  spaces ,  before . punctuation ! and ünïcödé, 日本語 — 0123456789\n\ttabs",
]


# --------------------------------------------------------------------------- build and load


def test_build_writes_a_loadable_small_qwen2_5_vl(tiny_dir: Path, loaded: tuple[Any, Any]
                                                   ) -> None:
    model, processor = loaded
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "processor_config.json", "chat_template.jinja",
            PROVENANCE_FILE} <= names
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.startswith(".")]  # no temp left
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"
    assert not model.training
    count = sum(p.numel() for p in model.parameters())
    assert 100_000 < count < 5_000_000
    assert json.loads((tiny_dir / PROVENANCE_FILE).read_text())["num_parameters"] == count
    config = model.config
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size
    head_dim = config.text_config.hidden_size // config.text_config.num_attention_heads
    assert 2 * sum(config.text_config.rope_parameters["mrope_section"]) == head_dim
    # Like Qwen (151,665 tokens, 152,064 logits), the model's vocabulary is padded.
    assert config.text_config.vocab_size >= len(processor.tokenizer)
    assert config.text_config.vocab_size % TinyModelSpec().vocab_multiple == 0
    assert model.dtype == torch.float32


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path, tiny_dir: Path,
                                                       loaded: tuple[Any, Any]) -> None:
    again = build_tiny_model(tmp_path / "again", seed=0)
    other = build_tiny_model(tmp_path / "other", seed=1)
    reference = _state(loaded[0])
    same = _state(load_model_and_processor(again)[0])
    different = _state(load_model_and_processor(other)[0])
    assert reference.keys() == same.keys() == different.keys()
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    assert not all(torch.equal(reference[k], different[k]) for k in reference)
    # Every file is byte-identical for the same seed; the tokenizer does not depend on it.
    for path in sorted(tiny_dir.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json",
                 "config.json", "chat_template.jinja"):
        assert (other / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors"
                                                          ).read_bytes()


def test_rebuild_replaces_a_model_but_never_a_foreign_folder(tmp_path: Path) -> None:
    out = build_tiny_model(tmp_path / "m", seed=1)
    first = (out / "model.safetensors").read_bytes()
    build_tiny_model(out, seed=2)
    assert (out / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or old folder left
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes"):
        build_tiny_model(foreign)
    assert [p.name for p in foreign.iterdir()] == ["todo.txt"]


@pytest.mark.parametrize("bad", [
    {"mrope_section": (2, 2, 2)},  # sums to 6, head_dim / 2 is 8
    {"fullatt_block_indexes": (2,)},  # the vision tower has blocks 0 and 1
    {"window_size": 100},  # not a multiple of 28
    {"num_key_value_heads": 3},
])
def test_spec_rejects_inconsistent_sizes(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="invalid TinyModelSpec"):
        TinyModelSpec(**bad)


def test_model_tiny_sizes_build_that_model_and_bad_ones_fail_at_params_time(
    tmp_path: Path,
) -> None:
    """`model.tiny` sizes reach the built model (base_model's info names them); sizes the spec
    rejects fail when params.yaml is written, not when the stage runs."""
    from videorft.errors import ConfigError
    from videorft.model.base import prepare_base_model
    from videorft.params import ModelParams

    params = ModelParams(tiny={"hidden_size": 96, "num_hidden_layers": 3,
                               "mrope_section": [2, 5, 5],  # head_dim 24: half is 12
                               "rope_theta": 10.0})
    info = prepare_base_model(params, tmp_path / "base")
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    text = config.get("text_config", config)
    assert (text["hidden_size"], text["num_hidden_layers"]) == (96, 3)
    assert text["rope_parameters"]["rope_theta"] == 10.0
    assert info["spec"]["hidden_size"] == 96 and info["spec"]["mrope_section"] == [2, 5, 5]
    copy_params(tmp_path)
    before = (tmp_path / "params.yaml").read_bytes()
    with pytest.raises(ConfigError, match=r"mrope_section .* must sum to head_dim / 2 = 12"):
        update_params(tmp_path / "params.yaml", overrides=["model.tiny.hidden_size=96"])
    assert (tmp_path / "params.yaml").read_bytes() == before


# --------------------------------------------------------------------------- tokenizer


def test_tokenizer_round_trips_prompts_and_answers(loaded: tuple[Any, Any]) -> None:
    tokenizer = loaded[1].tokenizer
    for text in [*_prompts(), *ANSWERS]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.decode(ids) == text
    # Trained on the project's wording: words become single tokens, not runs of bytes.
    for prompt in _prompts():
        assert len(tokenizer(prompt).input_ids) < len(prompt) / 2.5


def test_special_tokens_have_the_configs_ids(loaded: tuple[Any, Any]) -> None:
    model, processor = loaded
    tokenizer, config = processor.tokenizer, model.config
    ids = tokenizer.convert_tokens_to_ids([*SPECIAL_TOKENS, *NON_SPECIAL_ADDED_TOKENS])
    first = ids[0]
    assert ids == list(range(first, first + len(ids)))  # Qwen's order, after the BPE vocabulary
    assert first == len(tokenizer) - len(ids)
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert processor.video_token_id == config.video_token_id
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id,
                                                    tokenizer.pad_token_id]
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    # Each special token is one id, also inside text; decoding can drop them.
    text = "<|vision_start|><|video_pad|><|vision_end|>hi<|im_end|>"
    assert tokenizer(text).input_ids[:3] == [
        config.vision_start_token_id, config.video_token_id, config.vision_end_token_id]
    assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == "hi"


def test_chat_template_renders_one_video_pad(loaded: tuple[Any, Any]) -> None:
    processor = loaded[1]
    messages = row_messages({"prompt": _prompts()[0]})
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.count("<|video_pad|>") == 1
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                           "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>To ")
    assert text.endswith(_prompts()[0] + "<|im_end|>\n<|im_start|>assistant\n")
    closed = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert closed.endswith("<|im_end|>\n") and "<|im_start|>assistant" not in closed


def test_processor_expands_the_video_token_without_resizing(
    loaded: tuple[Any, Any], dataset: tuple[list[dict[str, Any]], FrameStore]
) -> None:
    model, processor = loaded
    rows, store = dataset
    for row in rows:
        frames = np.array(store.load(row["frames_key"]))
        t, h, w = frames.shape[:3]
        text = processor.apply_chat_template(row_messages(row), tokenize=False)
        # A plain call (the processor's saved defaults, no do_resize=False) keeps the size.
        out = processor(text=[text], videos=[frames], return_tensors="pt")
        assert out["video_grid_thw"].tolist() == [[t // 2, h // 14, w // 14]]
        n_video = int((out["input_ids"] == model.config.video_token_id).sum())
        assert n_video == (t // 2) * (h // 14) * (w // 14) // 4


# --------------------------------------------------------------------------- inputs


def test_video_inputs_match_the_frame_store(
    loaded: tuple[Any, Any], dataset: tuple[list[dict[str, Any]], FrameStore]
) -> None:
    model, processor = loaded
    rows, store = dataset
    inputs = video_inputs(processor, rows, store)
    assert {"input_ids", "attention_mask", "mm_token_type_ids", "pixel_values_videos",
            "video_grid_thw", "second_per_grid_ts"} <= set(inputs)
    shapes = [store.load(r["frames_key"]).shape for r in rows]
    assert len({s[1:3] for s in shapes}) > 1  # the batch mixes frame sizes (tracking is larger)
    assert inputs["video_grid_thw"].tolist() == [[t // 2, h // 14, w // 14] for t, h, w, _ in
                                                 shapes]
    fps = [store.meta(r["frames_key"])["sample_fps"] for r in rows]
    assert len(set(fps)) > 1 and all(f != 2.0 for f in fps)  # a fixed rate would hide a bug
    assert inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / f for f in fps],
                                                                  rel=1e-6)
    counts = (inputs["input_ids"] == model.config.video_token_id).sum(dim=1).tolist()
    assert counts == [(t // 2) * (h // 14) * (w // 14) // 4 for t, h, w, _ in shapes]
    assert inputs["pixel_values_videos"].shape[0] == sum((t // 2) * h * w // 196 for t, h, w, _ in
                                                         shapes)
    # Left padding: every prompt ends in the last column, shorter ones start later.
    mask = inputs["attention_mask"]
    assert mask[:, -1].all() and not mask[:, 0].all()
    pad_id = processor.tokenizer.pad_token_id
    assert (inputs["input_ids"][mask == 0] == pad_id).all()
    assert (inputs["mm_token_type_ids"][inputs["input_ids"] == model.config.video_token_id] == 2
            ).all()


def test_video_inputs_drive_absolute_time_rope(
    loaded: tuple[Any, Any], dataset: tuple[list[dict[str, Any]], FrameStore]
) -> None:
    """Temporal position ids step by tokens_per_second * 2 / sample_fps, as in Qwen2.5-VL."""
    model, processor = loaded
    rows, store = dataset
    inputs = video_inputs(processor, rows, store)
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs["second_per_grid_ts"], attention_mask=inputs["attention_mask"])
    tokens_per_second = model.config.vision_config.tokens_per_second
    for i, row in enumerate(rows):
        t, h, w = inputs["video_grid_thw"][i].tolist()
        video = inputs["input_ids"][i] == model.config.video_token_id
        temporal = positions[0, i][video].view(t, h * w // 4)
        assert (temporal == temporal[:, :1]).all()  # one temporal id per temporal patch
        steps = temporal[:, 0] - temporal[0, 0]
        step = tokens_per_second * 2 / store.meta(row["frames_key"])["sample_fps"]
        assert steps.tolist() == [int(k * step) for k in range(t)]


def test_forward_generate_and_the_video_reaches_the_model(
    loaded: tuple[Any, Any], dataset: tuple[list[dict[str, Any]], FrameStore]
) -> None:
    model, processor = loaded
    rows, store = dataset
    inputs = video_inputs(processor, rows, store)
    with torch.no_grad():
        logits = model(**inputs).logits
        batch, length = inputs["input_ids"].shape
        assert logits.shape == (batch, length, model.config.text_config.vocab_size)
        assert torch.isfinite(logits).all()
        changed = model(**video_inputs(processor, rows, _ChangedStore(store))).logits
        assert (changed[:, -1] - logits[:, -1]).abs().amax(dim=-1).min() > 1e-6
        # mm_token_type_ids carries the 3-D positions: dropping it changes the result.
        without = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
        assert not torch.allclose(model(**without).logits, logits)
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[0] == batch and length < out.shape[1] <= length + 4
    assert torch.equal(out[:, :length], inputs["input_ids"])


def test_video_inputs_without_generation_prompt_and_stale_rows(
    loaded: tuple[Any, Any], dataset: tuple[list[dict[str, Any]], FrameStore]
) -> None:
    processor = loaded[1]
    rows, store = dataset
    closed = video_inputs(processor, rows[:1], store, add_generation_prompt=False)
    text = processor.tokenizer.decode(closed["input_ids"][0])
    assert text.endswith("<|im_end|>\n")
    stale = {**rows[0], "sample_fps": rows[0]["sample_fps"] * 2}
    with pytest.raises(ValueError, match="stale"):
        video_inputs(processor, [stale], store)
    with pytest.raises(ValueError, match="at least one row"):
        video_inputs(processor, [], store)


# --------------------------------------------------------------------------- loading errors


def test_folder_without_a_model_is_named_in_the_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"empty-folder.*no config\.json"):
        load_model_and_processor(empty)
    with pytest.raises(ModelNotFoundError, match="no-such-folder"):
        load_model_and_processor(tmp_path / "no-such-folder")
    configured = tmp_path / "config-only"
    configured.mkdir()
    (configured / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"config-only.*no weights"):
        load_model_and_processor(configured)
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError, for generic handlers
        load_model_and_processor(str(empty))


def test_model_without_processor_and_dtype_choice(tmp_path: Path, tiny_dir: Path) -> None:
    bare = tmp_path / "weights-only"
    bare.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(tiny_dir / name, bare / name)
    with pytest.raises(ModelNotFoundError, match="weights-only"):
        load_model_and_processor(bare)
    with pytest.raises(ValueError, match="dtype"):
        load_model_and_processor(tiny_dir, dtype="fp8")
    model, _ = load_model_and_processor(tiny_dir, dtype="bfloat16", attn_implementation="eager")
    assert model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"


def test_unreachable_hub_id_is_named_in_the_error() -> None:
    # conftest sets HF_HUB_OFFLINE=1, so this never touches the network.
    with pytest.raises(ModelNotFoundError, match="videorft-test/no-such-model"):
        load_model_and_processor("videorft-test/no-such-model")


def test_importing_the_package_loads_no_ml_library() -> None:
    code = ("import sys, videorft.model; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]


def test_cli_builds_a_loadable_tiny_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from videorft.cli import app

    result = CliRunner().invoke(app, ["model", "build-tiny", str(tmp_path / "tiny"), "--seed", "1"])
    assert result.exit_code == 0, result.output
    model, processor = load_model_and_processor(str(tmp_path / "tiny"))
    assert model.config.model_type == "qwen2_5_vl"
    assert processor.tokenizer.convert_tokens_to_ids("<|video_pad|>") == model.config.video_token_id


def test_flash_attention_falls_back_to_sdpa_with_one_warning(tiny_dir: Path, caplog) -> None:
    """The videochat-r1 preset asks for flash_attention_2; without flash-attn (no package or
    no CUDA GPU, as here) the model still loads, with SDPA and one warning line."""
    from transformers.utils import is_flash_attn_2_available

    if is_flash_attn_2_available():
        pytest.skip("flash-attn runs here: there is nothing to fall back from")
    with caplog.at_level("WARNING", logger="videorft.model.loading"):
        model, _ = load_model_and_processor(tiny_dir, attn_implementation="flash_attention_2")
    assert model.config._attn_implementation == "sdpa"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "flash_attention_2" in warnings[0] and "using sdpa" in warnings[0]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("grid", [[[2, 8, 8], [4, 8, 8]], [[2, 8, 8], [2, 12, 10]]],
                         ids=["windows-alike", "edge-windows"])
def test_batched_vision_windows_give_the_per_window_loops_bits(
        tiny_dir: Path, attn_implementation: str, grid: list[list[int]]) -> None:
    """Loaded models attend within all equal-length vision windows in one call; outputs and
    gradients are bit-for-bit those of transformers' loop over windows. Grids in patches, the
    window is 8 x 8 patches: first every window and frame alike (one call per block), then a
    grid the window does not tile (shorter edge windows) beside frames of another size."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionAttention

    from videorft.model.vision_attention import WindowBatchedVisionAttention

    model, _ = load_model_and_processor(tiny_dir, attn_implementation=attn_implementation)
    attention = [m for m in model.modules() if isinstance(m, Qwen2_5_VLVisionAttention)]
    assert attention and all(type(m) is WindowBatchedVisionAttention for m in attention)
    grid_thw = torch.tensor(grid)
    config = model.config.vision_config
    width = config.in_channels * config.temporal_patch_size * config.patch_size ** 2
    pixels = torch.randn(int(grid_thw.prod(dim=1).sum()), width,
                         generator=torch.Generator().manual_seed(0))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        merged = model.model.visual(pixels, grid_thw=grid_thw).pooler_output
        (merged * torch.linspace(-1, 1, merged.numel()).view_as(merged)).sum().backward()
        return merged.detach(), [p.grad.clone() for p in model.model.visual.parameters()]

    batched, batched_grads = run()
    for module in attention:
        module.__class__ = Qwen2_5_VLVisionAttention
    looped, looped_grads = run()
    assert torch.equal(batched, looped)
    assert all(torch.equal(a, b) for a, b in zip(batched_grads, looped_grads, strict=True))
