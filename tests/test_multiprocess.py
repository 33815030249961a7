"""Data-parallel GRPO on CPU: ``accelerate launch`` with two processes (DDP over gloo).

tests/ddp_step.py takes one step of the tiny model with fixed completions, once alone and once
on two processes. The global batch is the same, so the update must be too: DDP averages the two
halves' gradients, and the shared-prompt pass, which runs the prompt outside the DDP wrapper,
must still reach every parameter's gradient. Each process must hold whole prompt groups.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from tests.conftest import ROOT
from tests.ddp_step import QUESTIONS
from tests.servers import free_port
from videorft.model.tiny import build_tiny_model

SCRIPT = ROOT / "tests/ddp_step.py"


def _run(command: list[str], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "weights.pt").is_file(), result.stdout[-2000:]


@pytest.mark.timeout(900)
def test_two_processes_take_the_single_process_step(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "model")
    args = ["--model", str(model), "--shared-prompt"]
    _run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path / "one")], tmp_path / "one")
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
          "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
          "--main_process_port", str(free_port()), str(SCRIPT), *args,
          "--out", str(tmp_path / "two")], tmp_path / "two")

    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())
    for questions in ranks:  # whole groups: each prompt twice (G = 2) on one process
        assert len(questions) == 4 and set(Counter(questions).values()) == {2}, ranks
        # a long and a short group: two completion passes, only the last through DDP
        assert {QUESTIONS.index(q) % 2 for q in questions} == {0, 1}, ranks
    assert Counter(ranks[0] + ranks[1]) == Counter(single)  # the same global batch
    one, two = (json.loads((tmp_path / run / "log.json").read_text()) for run in ("one", "two"))
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5, abs=1e-7)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-5)
    assert one["grad_norm"] > 0.1  # the fixed completions' rewards differ: a real update
    single_weights = torch.load(tmp_path / "one" / "weights.pt")
    ddp_weights = torch.load(tmp_path / "two" / "weights.pt")
    initial = Qwen2_5_VLForConditionalGeneration.from_pretrained(model).state_dict()
    moved = max((single_weights[k] - initial[k]).abs().max().item() for k in initial)
    gap = max((single_weights[k] - ddp_weights[k]).abs().max().item() for k in single_weights)
    assert moved > 1e-4 and gap < 1e-6, (moved, gap)
