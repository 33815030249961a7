"""The GPU check (benchmarks/gpu_step.py) at toy sizes on CPU: the same code a GPU run executes.

It runs the real VideoGRPOTrainer for whole steps with shared prompt on and off; the test checks
that both paths take the same first step (same loss and gradient norm from the same batch), that
every phase was timed, and that the results land where the device run will look for them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.servers import free_port


def load_gpu_step():
    spec = importlib.util.spec_from_file_location("gpu_step", ROOT / "benchmarks/gpu_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_times_every_phase_and_both_paths_agree(tmp_path: Path, capsys) -> None:
    gpu_step = load_gpu_step()
    assert gpu_step.main(["--tiny", "--steps", "1", "--completion", "6",
                          "--out", str(tmp_path)]) == 0
    shared = json.loads((tmp_path / "gpu_step-shared-6.json").read_text())
    plain = json.loads((tmp_path / "gpu_step-plain-6.json").read_text())
    for result in (shared, plain):
        phases = result["phase_seconds"]
        for phase in ("generation", "log-probs without grad", "policy forward", "backward"):
            assert phases[phase] > 0, (result["shared_prompt"], phase)
        assert result["seconds_per_step"] >= sum(phases.values()) - phases["other"] - 1e-6
        # min_new_tokens = cap: every one of the G completions has exactly 6 tokens.
        assert result["generated_tokens_per_step"] == 8 * 6
        assert result["video_tokens"] == 2 * 2 * 2  # 4 frames of 56 x 56: 2 x 2 x 2 merged
    assert shared["first_step"]["loss"] == pytest.approx(plain["first_step"]["loss"], abs=1e-6)
    assert shared["first_step"]["grad_norm"] == pytest.approx(plain["first_step"]["grad_norm"],
                                                              rel=1e-4)
    out = capsys.readouterr().out
    assert "whole_step_speedup" in out
    assert out.strip().splitlines()[-1].startswith("gpu_seconds_per_prompt_group: ")


def test_compiled_generation_takes_the_eager_first_step(tmp_path: Path, capsys) -> None:
    """``--generation compiled`` runs the trainer with a static cache and compile switched on
    (on CPU transformers keeps the step eager, so this checks the static cache and the wiring):
    with the same seed it samples the same completions, hence the same first step."""
    gpu_step = load_gpu_step()
    assert gpu_step.main(["--tiny", "--steps", "1", "--completion", "6", "--shared", "on",
                          "--generation", "eager", "compiled", "--varied-prompts",
                          "--out", str(tmp_path)]) == 0
    eager = json.loads((tmp_path / "gpu_step-shared-6.json").read_text())
    compiled = json.loads((tmp_path / "gpu_step-shared-6-compiled.json").read_text())
    assert compiled["generation"] == "compiled" and eager["generation"] == "eager"
    assert compiled["first_step"] == eager["first_step"]
    assert compiled["generated_tokens_per_step"] == 8 * 6
    assert "compiled_generation_speedup (eager / compiled step): " in capsys.readouterr().out


def test_zero3_on_one_process_gives_the_plain_first_step(tmp_path: Path) -> None:
    """The ZeRO-3 check (DeepSpeed, sharded parameters gathered per module) in its own process,
    so DeepSpeed's process group and environment stay out of the test worker: shared prompt on
    and off take the same first step, and their first policy log-probs agree."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_step.py"), "--tiny", "--zero3", "--steps",
         "1", "--completion", "4", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "MASTER_PORT": str(free_port())},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    shared = json.loads((tmp_path / "gpu_step-zero3-shared-4.json").read_text())
    plain = json.loads((tmp_path / "gpu_step-zero3-plain-4.json").read_text())
    assert shared["deepspeed"].endswith("configs/deepspeed/zero3.json")
    assert shared["text_params"] == plain["text_params"] > 0  # counted through the shards
    assert shared["first_step"]["loss"] == pytest.approx(plain["first_step"]["loss"], abs=1e-6)
    assert shared["first_step"]["grad_norm"] == pytest.approx(plain["first_step"]["grad_norm"],
                                                              rel=1e-4)
    gap = re.search(r"first policy log-probs, shared vs plain: max \|diff\| (\S+)", run.stdout)
    assert gap is not None and float(gap.group(1)) < 1e-5, run.stdout[-2000:]


def test_without_a_gpu_the_full_size_run_refuses_in_one_line(capsys) -> None:
    gpu_step = load_gpu_step()
    if gpu_step.torch.cuda.is_available():
        pytest.skip("a GPU is present: the full-size run would start")
    assert gpu_step.main([]) == 1
    assert capsys.readouterr().err.strip() == (
        "gpu_step: no CUDA device; use --tiny for the CPU run")


def test_the_7b_sizes_are_the_published_architecture() -> None:
    """Parameter counts of the random 7B built on the meta device (no memory): 7.07 B in the
    language model without the embedding table, 0.68 B in the vision tower, as measured on an
    H200 (docs/research/gpu-step.md)."""
    import torch

    gpu_step = load_gpu_step()
    processor = gpu_step.build_processor()
    model = gpu_step.build_model(gpu_step.QWEN25_VL_7B, processor.tokenizer, torch.bfloat16,
                                 torch.device("meta"))
    text, vision = gpu_step.parameter_counts(model)
    assert (text, vision) == (7_070_619_136, 676_550_144)
    assert model.get_input_embeddings().weight.shape == (152064, 3584)
