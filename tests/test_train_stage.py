"""The training stages' plumbing: base-model pinning, warm-start pass-through, run fingerprints
(resume the same run, restart a changed one) and the multi-GPU launch configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import project_params
from videorft.io import read_json
from videorft.model.base import INFO_FILE, prepare_base_model, resolve_model, write_skipped
from videorft.stages import get_stage
from videorft.stages.train import launch_command
from videorft.trainer.run_state import FINGERPRINT_FILE, prepare_run_dirs, run_fingerprint

ROOT = Path(__file__).resolve().parents[1]


def test_base_model_stage_builds_the_tiny_model_deterministically(tmp_path: Path) -> None:
    params = project_params(tmp_path)
    summary = get_stage("base_model")(params, tmp_path)
    assert summary == {"source": "tiny", "name_or_path": "tiny"}
    out = tmp_path / params.paths.base_model
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert resolve_model(Path(params.paths.base_model), tmp_path) == str(out)
    first = (out / "model.safetensors").read_bytes()
    get_stage("base_model")(params, tmp_path)
    assert (out / "model.safetensors").read_bytes() == first  # DVC sees the same output
    report = read_json(tmp_path / params.paths.reports / "base_model.json")
    assert report["source"] == "tiny" and report["seed"] == 0


def test_a_local_base_model_is_pinned_by_fingerprint(tmp_path: Path) -> None:
    params = project_params(tmp_path)
    tiny = tmp_path / "tiny"
    get_stage("base_model")(params, tmp_path)
    (tmp_path / params.paths.base_model).rename(tiny)
    info = prepare_base_model(
        params.model.model_copy(update={"name_or_path": str(tiny)}), tmp_path / "pinned"
    )
    assert info["source"] == "local" and len(info["fingerprint"]) == 64
    assert resolve_model(Path("pinned"), tmp_path) == str(tiny.resolve())
    with pytest.raises(FileNotFoundError, match=r"config\.json missing"):
        prepare_base_model(
            params.model.model_copy(update={"name_or_path": str(tmp_path)}), tmp_path / "x"
        )


def test_an_unreachable_hub_model_fails_clearly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = project_params(tmp_path, "model.name_or_path=nobody/no-such-model")
    with pytest.raises(FileNotFoundError, match="nobody/no-such-model@main: cannot fetch"):
        get_stage("base_model")(params, tmp_path)


def test_disabled_warm_start_passes_the_base_model_on(tmp_path: Path) -> None:
    params = project_params(tmp_path, "warm_start.enabled=false")
    get_stage("base_model")(params, tmp_path)
    stale = tmp_path / params.paths.warm_start / "config.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")  # an earlier warm start's model must not be loaded any more
    assert get_stage("warm_start")(params, tmp_path) == {"enabled": False}
    marker = read_json(tmp_path / params.paths.warm_start / INFO_FILE)
    assert marker == {"source": "skipped", "passes_on": params.paths.base_model}
    assert not stale.exists()
    assert resolve_model(Path(params.paths.warm_start), tmp_path) == str(
        tmp_path / params.paths.base_model
    )
    write_skipped(tmp_path / "again", "models/base")
    assert (tmp_path / "again" / INFO_FILE).read_bytes() == (
        tmp_path / params.paths.warm_start / INFO_FILE
    ).read_bytes()


def _fingerprint(tmp_path: Path, **train: object) -> dict:
    data = tmp_path / "train.jsonl"
    if not data.exists():
        data.write_text('{"id": 1}\n')
    recipe = {"learning_rate": 1e-6, "beta": 0.04, "max_steps": 10, "save_steps": 5, **train}
    return run_fingerprint(recipe, {"dtype": "bfloat16"}, init_model="some/hub-id",
                           train_data=data)


def test_same_run_resumes_changed_recipe_restarts(tmp_path: Path) -> None:
    checkpoints, metrics = tmp_path / "ckpt", tmp_path / "metrics"
    assert prepare_run_dirs(_fingerprint(tmp_path), checkpoints, metrics) == ("resume", [])
    (checkpoints / "checkpoint-5").mkdir()
    metrics.mkdir()
    (metrics / "metrics.json").write_text("{}")

    # Longer training or another checkpoint cadence: the same run, resumed.
    longer = _fingerprint(tmp_path, max_steps=20, save_steps=2)
    assert prepare_run_dirs(longer, checkpoints, metrics) == ("resume", [])
    assert (checkpoints / "checkpoint-5").is_dir() and (metrics / "metrics.json").exists()

    # Another learning rate: a different experiment; its checkpoints must not be resumed.
    decision, changed = prepare_run_dirs(
        _fingerprint(tmp_path, learning_rate=1e-5), checkpoints, metrics
    )
    assert (decision, changed) == ("restart", ["train.learning_rate"])
    assert not (checkpoints / "checkpoint-5").exists() and not metrics.exists()
    assert json.loads((checkpoints / FINGERPRINT_FILE).read_text())["fingerprint"]["train"][
        "learning_rate"] == 1e-5

    # New training data is a different run too.
    (checkpoints / "checkpoint-1").mkdir()
    (tmp_path / "train.jsonl").write_text('{"id": 2}\n')
    decision, changed = prepare_run_dirs(
        _fingerprint(tmp_path, learning_rate=1e-5), checkpoints, metrics
    )
    assert (decision, changed) == ("restart", ["train_data"])


def test_checkpoints_of_unknown_origin_are_not_resumed(tmp_path: Path) -> None:
    checkpoints = tmp_path / "ckpt"
    (checkpoints / "checkpoint-3").mkdir(parents=True)
    decision, _ = prepare_run_dirs(_fingerprint(tmp_path), checkpoints)
    assert decision == "restart" and not (checkpoints / "checkpoint-3").exists()


def test_multi_gpu_launch_uses_accelerate_with_the_configured_file(tmp_path: Path) -> None:
    params = project_params(
        tmp_path, "train.num_processes=8",
        "train.accelerate_config=configs/accelerate/zero3_offload.yaml",
    )
    command = launch_command(params, ROOT, "models/warm_start")
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1] == str(
        ROOT / "configs/accelerate/zero3_offload.yaml")
    assert command[command.index("--num_processes") + 1] == "8"
    assert command[-6:] == ["-m", "videorft.trainer.grpo", "--root", str(ROOT),
                            "--init-model", "models/warm_start"]
    from videorft.errors import StageError

    assert "--multi_gpu" not in command  # the config file names the distributed type
    plain = launch_command(project_params(tmp_path, "train.num_processes=2"), ROOT, "m")
    assert "--multi_gpu" in plain and "--config_file" not in plain  # DDP, also over CPUs

    missing = project_params(tmp_path, "train.accelerate_config=configs/nope.yaml")
    with pytest.raises(StageError, match=r"nope\.yaml: train\.accelerate_config names no file"):
        launch_command(missing, tmp_path, "m")


@pytest.mark.parametrize("config", sorted((ROOT / "configs/accelerate").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_accelerate_configs_load_and_point_at_real_deepspeed_files(config: Path) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    raw = yaml.safe_load(config.read_text())
    cluster = ClusterConfig.from_yaml_file(str(config))
    assert cluster.distributed_type in ("MULTI_GPU", "DEEPSPEED")
    if cluster.distributed_type == "DEEPSPEED":
        ds_file = ROOT / raw["deepspeed_config"]["deepspeed_config_file"]
        ds = json.loads(ds_file.read_text())
        stage = ds["zero_optimization"]["stage"]
        assert f"zero{stage}" in config.stem
        assert ("offload" in config.stem) == ("offload_optimizer" in ds["zero_optimization"])
        assert raw["deepspeed_config"]["zero3_init_flag"] == (stage == 3)
