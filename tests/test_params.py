"""params.yaml: validation, preset files, in-place overrides that keep comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import copy_params
from videorft.errors import ConfigError
from videorft.params import (
    PRESETS_DIR,
    deep_merge,
    load_params,
    load_raw,
    preset_names,
    preset_overlay,
    preset_params,
    to_plain,
    update_params,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    return copy_params(tmp_path)


def _keys(tree: object, prefix: str = "") -> set[str]:
    if isinstance(tree, dict):
        out: set[str] = set()
        for k, v in tree.items():
            # A list (sources) is replaced whole, so its inner keys need not match.
            out |= _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out
    return {prefix.rstrip(".")}


def test_repo_params_are_valid_and_default_is_tiny_cpu(params_file: Path) -> None:
    params = load_params(params_file)
    assert params.preset == "tiny-cpu"
    assert {"tiny-cpu", "videochat-r1"} <= set(preset_names(params_file))
    raw = to_plain(load_raw(params_file))
    applied = deep_merge(raw, preset_overlay(params_file, "tiny-cpu"))
    assert applied == raw, "the stage sections must equal the tiny-cpu preset applied"


def test_presets_set_the_same_keys(params_file: Path) -> None:
    names = preset_names(params_file)
    assert names == sorted(p.stem for p in (ROOT / PRESETS_DIR).glob("*.yaml"))
    key_sets = {name: _keys(preset_overlay(params_file, name)) for name in names}
    first = next(iter(key_sets.values()))
    for name, keys in key_sets.items():
        assert keys == first, f"preset {name} differs: {keys ^ first}"


def test_paper_preset_has_the_papers_numbers(params_file: Path) -> None:
    params = update_params(params_file, preset="videochat-r1")
    ef = params.extract_frames
    assert (ef.fps, ef.min_frames, ef.max_frames) == (2.0, 4, 768)
    assert ef.total_pixels == 3584 * 28 * 28 and ef.min_pixels == 16 * 28 * 28
    assert {s.type for s in params.download.sources} >= {"charades_sta", "got10k", "nextgqa"}
    assert params.preset == "videochat-r1"
    # Switching back restores the default exactly.
    update_params(params_file, preset="tiny-cpu")
    assert to_plain(load_raw(params_file)) == to_plain(load_raw(ROOT / "params.yaml"))


def test_override_keeps_comments_and_types(params_file: Path) -> None:
    params = update_params(params_file, overrides=["extract_frames.fps=1", "build_dataset.seed=3"])
    assert params.extract_frames.fps == 1.0 and params.build_dataset.seed == 3
    text = params_file.read_text()
    assert "# Qwen2.5-VL samples 2 frames per second" in text
    assert "fps: 1  " in text or "fps: 1 " in text


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("extract_frames.fsp=1", "unknown parameter 'extract_frames.fsp'"),
        ("extract_frames.fps=-1", "extract_frames.fps"),
        ("extract_frames.backend=opencv", "extract_frames.backend"),
        ("nothing", "must look like key.sub=value"),
    ],
)
def test_bad_override_is_refused_and_nothing_written(
    params_file: Path, override: str, message: str
) -> None:
    before = params_file.read_bytes()
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        update_params(params_file, overrides=[override])
    assert params_file.read_bytes() == before


def test_unknown_preset_and_unknown_section(params_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'.*tiny-cpu"):
        update_params(params_file, preset="nope")
    params_file.write_text(params_file.read_text() + "\ntrian:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="trian"):
        load_params(params_file)


def test_invalid_preset_is_reported_by_name(params_file: Path) -> None:
    """A broken preset file is named as such (not as params.yaml) and nothing is written."""
    preset = params_file.parent / PRESETS_DIR / "videochat-r1.yaml"
    preset.write_text(preset.read_text().replace("workers: 16", "workers: 0"))
    before = params_file.read_bytes()
    with pytest.raises(ConfigError, match=r"videochat-r1\.yaml: preset 'videochat-r1'.*workers"):
        update_params(params_file, preset="videochat-r1")
    assert params_file.read_bytes() == before
    load_params(params_file)  # params.yaml itself stays valid


def test_a_yaml_path_is_a_preset_too(params_file: Path, tmp_path: Path) -> None:
    """`--preset my.yaml`: a user's own overlay file, outside configs/presets."""
    mine = tmp_path / "mine.yaml"
    mine.write_text("train:\n  learning_rate: 0.125\n")
    assert preset_params(params_file, str(mine)).train.learning_rate == 0.125
    with pytest.raises(ConfigError, match=r"missing\.yaml: preset file not found"):
        update_params(params_file, preset=str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="a preset is a name"):
        update_params(params_file, preset="../tiny-cpu")


def test_an_old_presets_section_is_refused_in_one_line(params_file: Path) -> None:
    params_file.write_text(params_file.read_text() + "\npresets:\n  mine: {}\n")
    with pytest.raises(ConfigError, match=r"no longer read.*configs/presets/<name>\.yaml"):
        load_params(params_file)


def test_paper_preset_pins_every_model_and_training_key(params_file: Path) -> None:
    """A stale --set cannot survive `params apply videochat-r1`: the preset names every field
    of model, warm_start and train, and applying it undoes earlier overrides, mappings too."""
    from videorft.params import ModelParams, TrainParams, WarmStartParams

    preset = preset_overlay(params_file, "videochat-r1")
    for section, fields in (("model", ModelParams), ("warm_start", WarmStartParams),
                            ("train", TrainParams)):
        assert set(preset[section]) == set(fields.model_fields), section
    update_params(params_file, overrides=[
        "train.loss_type=dapo", "train.top_p=0.9", "train.lr_scheduler_type=cosine",
        "train.reward_weights={tracking: {iou: 2.0}}", "train.lora.enabled=true"])
    params = update_params(params_file, preset="videochat-r1")
    t = params.train
    assert (t.loss_type, t.top_p, t.lr_scheduler_type) == ("grpo", 1.0, "constant")
    assert t.reward_weights == {} and not t.lora.enabled
    assert (t.num_generations, t.learning_rate, t.beta, t.temperature) == (8, 1e-6, 0.04, 1.0)
    assert (t.max_completion_length, t.num_iterations, t.num_train_epochs) == (1024, 1, 1.0)


def test_a_no_op_apply_leaves_the_file_byte_for_byte(params_file: Path) -> None:
    """The default preset applied to the default params (what a first `videorft run` and a
    repeated `params apply` do) changes no value: the file keeps every byte, so DVC sees no
    change in params.yaml."""
    before = params_file.read_bytes()
    update_params(params_file, preset="tiny-cpu")
    update_params(params_file)
    update_params(params_file, overrides=["extract_frames.fps=2.0"])
    assert params_file.read_bytes() == before


def test_an_edit_keeps_the_files_layout(params_file: Path) -> None:
    """`--set` and `params apply` write lists the way the file writes them: a flow list stays
    `[a, b]` (and so does one replacing `[]`), a new list of scalars is written flow, a nested
    one in block style; new floats read back as floats in YAML 1.1 readers too (PyYAML); no
    line ends in a blank."""
    yaml = pytest.importorskip("yaml")
    update_params(params_file, overrides=["build_dataset.tasks=[temporal_grounding, mcq]",
                                          "train.sources=null", "train.learning_rate=5e-5"])
    update_params(params_file, overrides=["train.sources=[synthetic, pretrain]",
                                          "warm_start.curriculum=[]"])
    # `[]` has no block form; a list that replaces it stays on its line, nested or not.
    update_params(params_file, overrides=["warm_start.curriculum=[{tasks: [mcq], max_steps: 5}]"])
    text = params_file.read_text()
    assert "  curriculum: [{tasks: [mcq], max_steps: 5}]" in text
    assert "  tasks: [temporal_grounding, mcq]\n" in text
    assert "  sources: [synthetic, pretrain]" in text
    assert yaml.safe_load(text)["train"]["learning_rate"] == 5e-5
    # Another preset and back: the shipped file again, up to the spacing before comments.
    update_params(params_file, preset="videochat-r1")
    update_params(params_file, preset="tiny-cpu")
    text = params_file.read_text()
    assert not [line for line in text.splitlines() if line != line.rstrip()]

    def spaced(file_text: str) -> list[str]:
        return [" ".join(line.split()) for line in file_text.splitlines()]

    shipped = spaced((ROOT / "params.yaml").read_text())
    assert spaced(text) == shipped


@pytest.mark.parametrize("preset", sorted((ROOT / "docs/research/presets").glob("*.yaml")),
                         ids=lambda path: path.stem)
def test_every_research_preset_applies_to_the_default(tmp_path: Path, preset: Path) -> None:
    """The research log's overlays (docs/research/presets) stay runnable as the log says:
    applied to the default params, each gives valid params whose file holds all its values
    (merging the overlay in again changes nothing)."""
    params_file = copy_params(tmp_path)
    update_params(params_file, preset=str(preset))
    written = to_plain(load_raw(params_file))
    assert deep_merge(written, to_plain(load_raw(preset))) == written
