"""GRPO from params (videorft.trainer.grpo): config mapping, checkpoints, final model, metrics,
kill -9 and resume, frozen vision tower, LoRA.

A random tiny model never writes the answer format, so the real rewards (format/iou/accuracy)
are all 0 and GRPO would have nothing to learn from. The runs here therefore add one learnable
reward next to the real ones, ``quarter`` (the share of completion tokens whose id is a multiple
of 4, as in test_grpo_learns), by replacing ``videorft.rewards.make_reward_funcs``: in-process
with monkeypatch, in subprocesses through :data:`RUNNER`. Everything else is the real path.

Each step trains on one prompt (per-device batch = G = 4), so a step's per-task reward must
equal its total reward: that checks the per-task metrics against TRL's own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from tests.conftest import project_params
from videorft.errors import ConfigError
from videorft.trainer.grpo import (
    RUN_FILE,
    SUMMARY_FILE,
    check_enough_prompts,
    finished_summary,
    grpo_config,
    is_complete_checkpoint,
    last_complete_checkpoint,
    read_history,
    remove_checkpoints_after,
    train_grpo,
    truncate_history,
    vision_tower,
)
from videorft.trainer.metrics import smoothing_window, trailing_mean

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 6
OVERRIDES = (
    "train.num_generations=4", "train.per_device_train_batch_size=4",
    "train.gradient_accumulation_steps=1", "train.max_completion_length=8",
    f"train.max_steps={MAX_STEPS}", "train.save_steps=2", "train.save_total_limit=2",
    "train.logging_steps=1", "train.seed=0", "train.learning_rate=0.02", "train.beta=0.04",
    "train.gradient_checkpointing=false", "train.mixed_precision='no'",
    "train.freeze_vision=false", "train.lora.enabled=false",
)
#: A subprocess: the learnable reward added (stalling from step argv[1] on), then the CLI.
RUNNER = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
import videorft.rewards
from tests.test_train_grpo import with_quarter_reward
from videorft.trainer.grpo import main
videorft.rewards.make_reward_funcs = with_quarter_reward(stall_after=int(sys.argv[1]))
main(sys.argv[2:])
"""
STALL_S = 60.0


def with_quarter_reward(stall_after: int | None = None):
    """``make_reward_funcs`` plus ``quarter``. With ``stall_after=N`` the scoring of every step
    after step N first sleeps :data:`STALL_S`: a test can then kill the run between step N's
    log and step N+1's checkpoint without racing it."""
    from videorft.rewards import make_reward_funcs

    def quarter(prompts: list, completions: list, completion_ids: list, trainer_state: Any,
                **_: Any) -> list:
        if stall_after is not None and trainer_state.global_step >= stall_after:
            time.sleep(STALL_S)
        return [sum(t % 4 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]

    def funcs(thinking: bool, weights: dict | None = None) -> list:
        return [*make_reward_funcs(thinking, weights), quarter]

    return funcs


def make_project(tiny_project: tuple[Path, Any], dest: Path, *overrides: str):
    """A project folder with the tiny project's dataset and frames and its own params."""
    source, params = tiny_project
    dest.mkdir(parents=True, exist_ok=True)
    for rel in (params.paths.dataset, params.paths.frames):
        shutil.copytree(source / rel, dest / rel)
    return project_params(dest, *OVERRIDES, *overrides)


def run_cli(root: Path, init_model: Path, stall_after: int) -> subprocess.Popen:
    """The CLI in a subprocess; its output goes to ``root / "cli.log"`` (a pipe nobody reads
    could fill up and stall it)."""
    with open(root / "cli.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(stall_after), "--root", str(root),
             "--init-model", str(init_model)],
            cwd=root, stdout=log, stderr=subprocess.STDOUT,
        )


def train_project(root: Path, init_model: Path) -> dict[str, Any]:
    """In-process ``train_grpo`` with the CLI's default folders (and the quarter reward)."""
    import videorft.rewards
    from videorft.params import load_params

    params = load_params(root / "params.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(videorft.rewards, "make_reward_funcs", with_quarter_reward())
        return train_grpo(params, root, init_model=init_model,
                          checkpoints_dir=root / params.paths.checkpoints,
                          out_dir=root / params.paths.trained,
                          metrics_dir=root / params.paths.reports / "train")


def tsv_rows(root: Path, name: str) -> list[tuple[int, float]]:
    return read_history(root / "reports" / "train").get(name, [])


def state_dict(path: Path) -> dict[str, Any]:
    from videorft.model.loading import load_model_and_processor

    model, _ = load_model_and_processor(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def reference(tiny_project, tmp_path_factory) -> Path:
    """An uninterrupted run (6 steps) in its own project copy."""
    root = tmp_path_factory.mktemp("grpo-reference")
    make_project(tiny_project, root)
    train_project(root, tiny_project[0] / "tiny-model")
    return root


# ------------------------------------------------------------------------------ config


def test_default_grpo_uses_the_warm_starts_adamw(tmp_path: Path) -> None:
    """The shipped recipe's GRPO optimiser is HF's default AdamW (the fused one), as the warm
    start's is: its results (README) were measured with it. `adamw_torch` is the same maths
    with other round-off, and pinned by mistake it changed them (research log, g3: TG +14.8
    for the README's +21.1)."""
    import torch

    from tests.conftest import copy_params
    from videorft.params import load_params
    from videorft.trainer.sft import _training_args

    params = load_params(copy_params(tmp_path))
    grpo = grpo_config(params, tmp_path / "ck").optim
    warm_start = _training_args(params, tmp_path / "ws", dtype=torch.float32, max_steps=1).optim
    assert grpo == warm_start == "adamw_torch_fused"


def test_grpo_config_maps_every_train_knob(tmp_path: Path) -> None:
    params = project_params(
        tmp_path, "train.mixed_precision=bf16", "train.gradient_checkpointing=true",
        "train.save_steps=7", "train.save_total_limit=3", "train.seed=123",
        "train.warmup_ratio=0.1", "train.loss_type=dr_grpo", "train.scale_rewards=batch",
        "train.num_generations=6", "train.learning_rate=2.5e-06", "train.beta=0.01",
        "train.epsilon=0.3", "train.temperature=0.7", "train.top_p=0.9",
        "train.max_completion_length=77", "train.num_iterations=2", "train.max_steps=11",
        "train.num_train_epochs=3", "train.per_device_train_batch_size=12",
        "train.gradient_accumulation_steps=5", "train.weight_decay=0.01",
        "train.max_grad_norm=0.5", "train.lr_scheduler_type=cosine", "train.logging_steps=3",
        "train.optim=sgd", "train.shuffle_dataset=false",
    )
    cfg = grpo_config(params, tmp_path / "ck")
    t = params.train
    same_name = ("num_generations", "learning_rate", "optim", "lr_scheduler_type", "weight_decay",
                 "max_grad_norm", "beta", "epsilon", "loss_type", "scale_rewards",
                 "temperature", "top_p", "max_completion_length", "num_iterations",
                 "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "save_steps", "save_total_limit",
                 "logging_steps", "seed", "gradient_checkpointing", "shuffle_dataset")
    for name in same_name:
        value = getattr(cfg, name)
        value = getattr(value, "value", value)  # enums (lr_scheduler_type)
        assert value == getattr(t, name), name
    assert cfg.bf16 is True and cfg.fp16 is False
    assert cfg.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert cfg.warmup_steps == pytest.approx(0.1)  # a float < 1 is a ratio in transformers 5
    assert str(cfg.save_strategy.value) == "steps" and str(cfg.logging_strategy.value) == "steps"
    assert cfg.report_to in ([], "none", ["none"])
    assert cfg.remove_unused_columns is False and cfg.save_only_model is False
    assert cfg.output_dir == str(tmp_path / "ck")
    import torch

    assert cfg.use_cpu is (not torch.cuda.is_available())
    fp16 = grpo_config(project_params(tmp_path, "train.mixed_precision=fp16"), tmp_path)
    assert fp16.fp16 is True and fp16.bf16 is False
    plain = grpo_config(project_params(tmp_path, "train.mixed_precision='no'",
                                       "train.gradient_checkpointing=false",
                                       "train.cache_implementation=dynamic"), tmp_path)
    assert plain.fp16 is False and plain.bf16 is False and plain.gradient_checkpointing is False
    assert plain.cache_implementation is None  # dynamic: TRL's default cache
    static = grpo_config(project_params(tmp_path, "train.cache_implementation=static",
                                        "train.compile_generation=true"), tmp_path)
    assert static.cache_implementation == "static"


def test_compiled_generation_needs_a_static_cache(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="compile_generation needs cache_implementation"):
        project_params(tmp_path, "train.cache_implementation=dynamic",
                       "train.compile_generation=true")


def test_a_split_smaller_than_one_generation_batch_is_an_error(tmp_path: Path) -> None:
    """TRL's sampler would drop the incomplete batch and "finish" after 0 steps."""
    params = project_params(tmp_path, "train.num_generations=2",
                            "train.per_device_train_batch_size=8")
    args = grpo_config(params, tmp_path / "ck")
    check_enough_prompts(4, args, "data/dataset/train.jsonl")  # 8 rows / G=2 = 4 prompts: fits
    with pytest.raises(ConfigError, match=r"train.jsonl: 3 training prompt\(s\).*needs 4"):
        check_enough_prompts(3, args, "data/dataset/train.jsonl")


def test_train_sources_naming_no_rows_fail_before_training(tiny_project, tmp_path: Path) -> None:
    root, params = tiny_project
    train = params.train.model_copy(update={"sources": ["synthetic", "charades_sta"]})
    with pytest.raises(ConfigError, match=r"train.sources: 'charades_sta' has no rows in .*"
                                          r"train.jsonl \(its sources: synthetic\)"):
        train_grpo(params.model_copy(update={"train": train}), root,
                   init_model=root / "tiny-model", checkpoints_dir=tmp_path / "ck",
                   out_dir=tmp_path / "trained", metrics_dir=tmp_path / "metrics")
    assert not (tmp_path / "trained").exists()


# ------------------------------------------------------------------------ resume helpers


def _checkpoint(folder: Path, step: int | None, weights: bool = True, torn: bool = False) -> Path:
    folder.mkdir(parents=True)
    if weights:
        (folder / "model.safetensors").write_bytes(b"x")
    if step is not None:
        text = json.dumps({"global_step": step, "log_history": []})
        (folder / "trainer_state.json").write_text(text[: len(text) // 2] if torn else text)
    return folder


def test_only_complete_checkpoints_are_resumed(tmp_path: Path) -> None:
    from transformers.trainer_utils import get_last_checkpoint

    good = _checkpoint(tmp_path / "checkpoint-2", 2)
    _checkpoint(tmp_path / "checkpoint-4", 4, torn=True)       # killed writing the state
    _checkpoint(tmp_path / "checkpoint-6", None)               # killed before the state
    _checkpoint(tmp_path / "checkpoint-8", 6)                  # state of another step
    _checkpoint(tmp_path / "checkpoint-10", 10, weights=False)  # no model weights
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-10")  # why we check
    assert is_complete_checkpoint(good)
    assert last_complete_checkpoint(tmp_path) == good
    removed = remove_checkpoints_after(tmp_path, good)
    assert sorted(p.name for p in removed) == [
        "checkpoint-10", "checkpoint-4", "checkpoint-6", "checkpoint-8"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
    assert last_complete_checkpoint(tmp_path / "missing") is None
    # A later complete checkpoint past a lowered step target is not resumed, and goes.
    _checkpoint(tmp_path / "checkpoint-12", 12)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-12"
    assert last_complete_checkpoint(tmp_path, at_most=10) == good
    assert last_complete_checkpoint(tmp_path, at_most=1) is None
    assert [p.name for p in remove_checkpoints_after(tmp_path, good)] == ["checkpoint-12"]


def test_history_is_cut_back_to_the_resumed_step(tmp_path: Path) -> None:
    metric = tmp_path / "plots" / "metrics" / "rewards" / "format" / "mean.tsv"
    metric.parent.mkdir(parents=True)
    metric.write_text("step\tmean\n1\t0.5\n2\t0.25\n3\t0.75\n4\t0.")  # torn last row
    later = tmp_path / "plots" / "metrics" / "kl.tsv"
    later.write_text("step\tkl\n3\t0.1\n")
    last = truncate_history(tmp_path, 2)
    assert last == {"rewards/format/mean": 0.25}
    assert read_history(tmp_path) == {"rewards/format/mean": [(1, 0.5), (2, 0.25)]}
    assert not later.exists()
    assert truncate_history(tmp_path, 0) == {} and read_history(tmp_path) == {}


def test_a_model_cards_tags_are_sorted_and_the_rest_kept(tmp_path: Path) -> None:
    from videorft.trainer.video_grpo import sort_card_tags

    card = tmp_path / "README.md"
    body = "\n# Model Card for checkpoints\n\nTrained with GRPO.\n"
    card.write_text("---\nlibrary_name: transformers\ntags:\n- trl\n- grpo\n"
                    "- generated_from_trainer\nlicence: license\n---\n" + body)
    sort_card_tags(card)
    assert card.read_text() == ("---\nlibrary_name: transformers\ntags:\n- generated_from_trainer\n"
                                "- grpo\n- trl\nlicence: license\n---\n" + body)


def test_the_reward_curve_is_smoothed_by_a_trailing_mean_of_a_twentieth_of_the_run() -> None:
    # By hand: window 2 averages each value with the one before it; the first stands alone.
    assert trailing_mean([1.0, 3.0, 2.0, 6.0], 2) == [1.0, 2.0, 2.5, 4.0]
    assert trailing_mean([1.0, 3.0, 2.0], 1) == [1.0, 3.0, 2.0]
    assert trailing_mean([4.0, 0.0, 2.0, 6.0, 1.0], 3) == [4.0, 2.0, 2.0, 8 / 3, 3.0]
    assert [smoothing_window(n) for n in (1, 19, 20, 240, 241)] == [1, 1, 1, 12, 12]


# ------------------------------------------------------------------------------ full runs


def test_run_writes_checkpoints_model_and_metrics(reference: Path, tiny_project) -> None:
    from huggingface_hub import ModelCard

    from videorft.model.loading import load_model_and_processor

    checkpoints = reference / "models" / "checkpoints"
    kept = sorted(p.name for p in checkpoints.glob("checkpoint-*"))
    assert kept == ["checkpoint-4", "checkpoint-6"]  # save_steps 2, save_total_limit 2
    for name in kept:
        folder = checkpoints / name
        assert is_complete_checkpoint(folder)
        for part in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "model.safetensors"):
            assert (folder / part).is_file(), (name, part)

    trained = reference / "models" / "trained"
    for part in ("model.safetensors", "config.json", "generation_config.json",
                 "processor_config.json", "tokenizer.json", SUMMARY_FILE):
        assert (trained / part).is_file(), part
    assert not (trained / "training_args.bin").exists()
    assert sorted(p.name for p in trained.parent.iterdir()) == ["checkpoints", "trained"]
    # TRL's card for the folder lists its tags in sorted order, not a set's (hash-seed) order.
    tags = ModelCard.load(checkpoints / "README.md").data.tags
    assert "grpo" in tags and tags == sorted(tags), tags
    load_model_and_processor(trained)
    init, final = state_dict(tiny_project[0] / "tiny-model"), state_dict(trained)
    assert init.keys() == final.keys()
    assert any(not (init[k] == final[k]).all() for k in init)  # it trained

    summary = json.loads((trained / SUMMARY_FILE).read_text())
    assert summary["global_step"] == MAX_STEPS and summary["completed"] is True
    assert summary["logged_steps"] == MAX_STEPS
    assert not {"resumed_from", "runtime_s", "train_runtime_s"} & set(summary)  # run facts...
    facts = json.loads((reference / "reports" / "train" / RUN_FILE).read_text())
    assert facts["resumed_from"] is None and facts["runtime_s"] > 0  # ... live beside metrics
    assert set(summary["rewards"]) == {"format", "iou", "accuracy", "quarter"}
    assert set(summary["task_rewards"]) <= {"temporal_grounding", "tracking", "grounded_qa",
                                            "mcq"}

    metrics_dir = reference / "reports" / "train"
    metrics = json.loads((metrics_dir / "metrics.json").read_text())
    assert metrics["step"] == MAX_STEPS
    for key in ("reward", "reward_std", "kl", "learning_rate", "loss", "grad_norm", "entropy"):
        assert isinstance(metrics[key], float), key
    assert metrics["completions"]["mean_length"] > 0
    assert set(metrics["rewards"]) == {"format", "iou", "accuracy", "quarter"}
    assert set(metrics["rewards_per_task"]) and all(
        "mean" in v for v in metrics["rewards_per_task"].values())

    history = read_history(metrics_dir)
    steps = list(range(1, MAX_STEPS + 1))
    for name in ("reward", "reward_std", "kl", "learning_rate", "rewards/quarter/mean",
                 "completions/mean_length"):
        assert [s for s, _ in history[name]] == steps, name
    # One prompt per step: the step's task reward is the step's total reward.
    total = dict(history["reward"])
    task_steps = []
    for name, rows in history.items():
        if name.startswith("rewards_per_task/"):
            for step, value in rows:
                assert value == pytest.approx(total[step], abs=1e-6), (name, step)
                task_steps.append(step)
    assert sorted(task_steps) == steps
    assert any(v > 0 for v in total.values())

    png = (metrics_dir / "reward_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_a_finished_run_is_not_trained_again(reference: Path, tiny_project, monkeypatch,
                                            tmp_path: Path) -> None:
    import videorft.model.loading
    from videorft.params import load_params

    def no_loading(*_: Any, **__: Any):
        raise AssertionError("a finished run loaded a model")

    monkeypatch.setattr(videorft.model.loading, "load_model_and_processor", no_loading)
    trained = reference / "models" / "trained"
    before = (trained / "model.safetensors").stat().st_mtime_ns
    params = load_params(reference / "params.yaml")
    started = time.monotonic()
    summary = train_grpo(params, reference, init_model=tiny_project[0] / "tiny-model",
                         checkpoints_dir=reference / "models" / "checkpoints",
                         out_dir=trained, metrics_dir=reference / "reports" / "train")
    assert time.monotonic() - started < 5
    facts = json.loads((reference / "reports/train" / RUN_FILE).read_text())
    assert summary == {**json.loads((trained / SUMMARY_FILE).read_text()), **facts}
    assert (trained / "model.safetensors").stat().st_mtime_ns == before
    # A larger step target is not "finished": it would train on.
    more = project_params(tmp_path, *OVERRIDES, "train.max_steps=8")
    assert finished_summary(more, reference / "models" / "checkpoints", trained) is None


def test_a_lowered_step_target_never_trains_past_it(reference: Path, tiny_project,
                                                    tmp_path: Path) -> None:
    """After a 6-step run, max_steps 4 resumes from checkpoint-4 (not from 6, which would end
    at once with 6 steps' weights) and the final model is checkpoint-4's."""
    import torch
    from safetensors.torch import load_file

    root = tmp_path / "p"
    shutil.copytree(reference, root)
    params = project_params(root, *OVERRIDES, "train.max_steps=4")
    checkpoints = root / "models" / "checkpoints"
    summary = train_grpo(params, root, init_model=tiny_project[0] / "tiny-model",
                         checkpoints_dir=checkpoints, out_dir=root / "models" / "trained",
                         metrics_dir=root / "reports" / "train")
    assert summary["global_step"] == 4
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-4"]
    final = load_file(root / "models" / "trained" / "model.safetensors")
    saved = load_file(reference / "models" / "checkpoints" / "checkpoint-4" / "model.safetensors")
    six = load_file(reference / "models" / "trained" / "model.safetensors")
    assert final.keys() == saved.keys()
    assert all(torch.equal(final[k], saved[k]) for k in final)
    assert not all(torch.equal(final[k], six[k]) for k in final)  # the check can fail


def test_a_killed_run_resumes_where_its_checkpoint_left_off(
    reference: Path, tiny_project, tmp_path: Path
) -> None:
    """The CLI killed (-9) after step 3 was logged, checkpoint-2 being the newest: the re-run
    (in-process, to spare a second interpreter start) resumes from checkpoint-2, logs steps
    3..6 once each, and ends exactly where the uninterrupted run ended."""
    root = tmp_path / "project"
    make_project(tiny_project, root)
    model = tiny_project[0] / "tiny-model"
    checkpoints = root / "models" / "checkpoints"
    proc = run_cli(root, model, stall_after=3)  # stalls before step 4: no race with the kill
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if any(step >= 3 for step, _ in tsv_rows(root, "reward")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, ("the run ended before it could be killed:\n"
                                     + (root / "cli.log").read_text()[-4000:])
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (root / "models" / "trained").exists()
    logged_before = [s for s, _ in tsv_rows(root, "reward")]
    latest = last_complete_checkpoint(checkpoints)
    assert latest is not None and latest.name == "checkpoint-2", latest
    assert 3 in logged_before  # the killed run had logged past its checkpoint

    summary = train_project(root, model)
    saved = json.loads((root / "models" / "trained" / SUMMARY_FILE).read_text())
    assert summary == {**saved, **json.loads((root / "reports/train" / RUN_FILE).read_text())}
    assert summary["resumed_from"] == "checkpoint-2" and summary["resumed_from_step"] == 2
    assert summary["global_step"] == MAX_STEPS and summary["completed"] is True
    assert summary["logged_steps"] == MAX_STEPS

    history = read_history(root / "reports" / "train")
    steps = list(range(1, MAX_STEPS + 1))
    for name, rows in history.items():
        seen = [s for s, _ in rows]
        assert seen == sorted(set(seen)), (name, seen)  # each step at most once, in order
    for name in ("reward", "kl", "loss", "learning_rate", "rewards/quarter/mean", "entropy"):
        assert [s for s, _ in history[name]] == steps, name

    # On CPU the resumed run is bit-identical to the uninterrupted one (RNG, data order,
    # optimizer and scheduler state all restored from the checkpoint; and a subprocess and
    # this process compute the same).
    expected = read_history(reference / "reports" / "train")
    for name in ("reward", "reward_std", "kl", "loss", "grad_norm", "entropy",
                 "rewards/quarter/mean", "num_tokens"):
        assert history[name] == expected[name], name
    assert summary["reward_last"] == json.loads(
        (reference / "models" / "trained" / SUMMARY_FILE).read_text())["reward_last"]
    resumed, uninterrupted = (state_dict(root / "models" / "trained"),
                              state_dict(reference / "models" / "trained"))
    assert all((resumed[k] == uninterrupted[k]).all() for k in uninterrupted)


def _train_in_process(tiny_project, root: Path, monkeypatch, *overrides: str) -> dict[str, Any]:
    import videorft.rewards

    params = make_project(tiny_project, root, "train.max_steps=2", *overrides)
    monkeypatch.setattr(videorft.rewards, "make_reward_funcs", with_quarter_reward())
    return train_grpo(params, root, init_model=tiny_project[0] / "tiny-model",
                      checkpoints_dir=root / "ck", out_dir=root / "trained",
                      metrics_dir=root / "metrics")


@pytest.mark.parametrize("frozen", [True, False], ids=["freeze_vision", "train_vision"])
def test_freeze_vision_keeps_the_vision_tower(tiny_project, tmp_path: Path, monkeypatch,
                                              frozen: bool) -> None:
    """With gradient checkpointing on. The unfrozen run is the control: there the vision
    tower does change, so the frozen run's unchanged tower is the freezing's doing."""
    from videorft.model.loading import load_model_and_processor

    summary = _train_in_process(tiny_project, tmp_path, monkeypatch,
                                f"train.freeze_vision={str(frozen).lower()}",
                                "train.gradient_checkpointing=true")
    assert summary["global_step"] == 2
    model, _ = load_model_and_processor(tiny_project[0] / "tiny-model")
    prefix = vision_tower(model)[0] + "."
    init, final = model.state_dict(), state_dict(tmp_path / "trained")
    vision = [k for k in init if k.startswith(prefix)]
    language = [k for k in init if not k.startswith(prefix)]
    assert vision and language
    vision_changed = [k for k in vision if not (init[k] == final[k]).all()]
    language_changed = [k for k in language if not (init[k] == final[k]).all()]
    assert language_changed
    if frozen:
        assert vision_changed == []
    else:
        assert len(vision_changed) > len(vision) // 2


def test_lora_run_ends_in_a_plain_merged_model(tiny_project, tmp_path: Path,
                                               monkeypatch) -> None:
    from videorft.model.loading import load_model_and_processor

    summary = _train_in_process(
        tiny_project, tmp_path, monkeypatch, "train.lora.enabled=true", "train.lora.r=4",
        "train.lora.alpha=8", "train.lora.dropout=0.0",
        "train.lora.target_modules=[q_proj, v_proj]",
    )
    assert summary["global_step"] == 2
    checkpoint = tmp_path / "ck" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file()  # checkpoints: adapters only
    assert last_complete_checkpoint(tmp_path / "ck") == checkpoint
    trained = tmp_path / "trained"
    assert not (trained / "adapter_config.json").exists()
    assert (trained / "model.safetensors").is_file()
    load_model_and_processor(trained)
    init, final = state_dict(tiny_project[0] / "tiny-model"), state_dict(trained)
    assert init.keys() == final.keys()  # plain model: no lora_A/lora_B, no base_model prefix
    changed = {k for k in init if not (init[k] == final[k]).all()}
    assert changed and all(".q_proj." in k or ".v_proj." in k for k in changed), changed


def test_resume_loads_weights_saved_in_the_checkpoint_key_format(tiny_project,
                                                                 tmp_path: Path) -> None:
    """save_pretrained renames Qwen2.5-VL's keys (model.visual.* -> visual.*); the Trainer's
    own resume loads none of them back (non-strict load, transformers #43701), ours all."""
    import torch
    from safetensors.torch import load_file

    from videorft.model.loading import load_model_and_processor
    from videorft.trainer.grpo import load_saved_weights

    trained, _ = load_model_and_processor(tiny_project[0] / "tiny-model")
    with torch.no_grad():
        for param in trained.parameters():
            param.add_(1.0)
    trained.save_pretrained(tmp_path / "ck")
    fresh, _ = load_model_and_processor(tiny_project[0] / "tiny-model")
    saved = load_file(str(tmp_path / "ck" / "model.safetensors"))
    plain = fresh.load_state_dict(saved, strict=False)  # what Trainer._load_from_checkpoint does
    assert len(plain.missing_keys) > len(saved) // 2
    load_saved_weights(fresh, tmp_path / "ck")
    expected = trained.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in fresh.state_dict().items())


def test_identical_runs_give_identical_bytes(tiny_project, reference, tmp_path: Path) -> None:
    """Same inputs, same bytes: a second uninterrupted run of the same recipe writes a final
    model folder, checkpoints and metric history identical to the reference's, file by file
    (what DVC hashes and publish versions); the run times live only in
    reports/train/run.json, which DVC does not track."""
    import hashlib

    def digests(out: Path) -> dict[str, str]:
        files = [out] if out.is_file() else sorted(p for p in out.rglob("*") if p.is_file())
        assert files, out
        return {p.relative_to(out.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in files}

    make_project(tiny_project, tmp_path)
    train_project(tmp_path, tiny_project[0] / "tiny-model")
    for rel in ("models/trained", "models/checkpoints", "reports/train/plots",
                "reports/train/metrics.json", "reports/train/reward_curve.png"):
        ours, theirs = digests(tmp_path / rel), digests(reference / rel)
        assert ours.keys() == theirs.keys(), rel
        differ = sorted(name for name in ours if ours[name] != theirs[name])
        assert not differ, f"{rel}: {differ}"


def test_the_pinned_trls_deprecated_checkpointing_read_stays_out_of_the_console(
    tiny_project,
) -> None:
    """TRL reads `model.is_gradient_checkpointing` around every generation; transformers
    deprecates it. The trainer module silences that one FutureWarning (users cannot act on
    it), even under `-W always`, and only that one."""
    root, _ = tiny_project
    code = (
        "import warnings\n"
        "import videorft.trainer.video_grpo\n"
        "from videorft.model.loading import load_model_and_processor\n"
        f"model, _ = load_model_and_processor({str(root / 'tiny-model')!r})\n"
        "model.is_gradient_checkpointing\n"
        "warnings.warn('other deprecations still show', FutureWarning)\n"
    )
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                          text=True, timeout=120, check=True)
    assert "is_gradient_checkpointing" not in done.stderr
    assert "other deprecations still show" in done.stderr
