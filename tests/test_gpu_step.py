"""The GPU check (benchmarks/gpu_step.py) at toy sizes on CPU: the same code a GPU run executes.

It runs the real VideoGRPOTrainer for whole steps with shared prompt on and off; the test checks
that both paths take the same first step (same loss and gradient norm from the same batch), that
every phase was timed, and that the results land where the device run will look for them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import ROOT


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
