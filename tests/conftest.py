"""Shared test fixtures. Every test runs offline; servers (Prefect, S3, HTTP) bind 127.0.0.1."""

from __future__ import annotations

import os

pytest_plugins = ["tests.servers"]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Two test workers load both cores: a temporary Prefect server can take longer than Prefect's
# default 20 s to start, and one that times out is left running (holding its parent's pipes).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


# ------------------------------------------------------------------ a small trained-ready project

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def record_dvc_calls(monkeypatch: pytest.MonkeyPatch, *modules) -> list[list[str]]:
    """The DVC commands ``modules`` run through their ``dvc`` from now on (still the real DVC
    CLI): each call's arguments, in order, in one list."""
    calls: list[list[str]] = []
    for module in modules:
        real = module.dvc

        def recording(args: list[str], root: Path, real=real, **kwargs):
            calls.append(args)
            return real(args, root, **kwargs)

        monkeypatch.setattr(module, "dvc", recording)
    return calls


#: The stages that prepare data (no model involved), the first three of dvc.yaml.
DATA_STAGES: tuple[str, ...] = ("download", "extract_frames", "build_dataset")

#: The preset every test project starts from: the default's stages at a size that runs in
#: seconds (the default itself is the full-size demo of `make run`).
TEST_PRESET = "smoke"


def copy_params(root: Path) -> Path:
    """The repo's params.yaml and preset files (configs/presets) copied into ``root``, as a
    clone holds them; returns the params.yaml path."""
    shutil.copytree(ROOT / "configs" / "presets", root / "configs" / "presets",
                    dirs_exist_ok=True)
    return Path(shutil.copy(ROOT / "params.yaml", root / "params.yaml"))


def project_params(root: Path, *overrides: str):
    """A copy of the repo's params.yaml in ``root`` with the test preset and ``overrides``
    applied, loaded."""
    from videorft.params import load_params, update_params

    path = copy_params(root)
    update_params(path, preset=TEST_PRESET, overrides=list(overrides))
    return load_params(path)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory):
    """(root, params): the data stages run on 2 synthetic videos per task, plus the tiny model
    built at ``root / "tiny-model"``. Session-scoped and shared: treat it as read-only (copy
    what you change)."""
    from videorft.model.tiny import build_tiny_model
    from videorft.stages import get_stage

    root = tmp_path_factory.mktemp("tiny-project")
    params = project_params(
        root,
        "download.sources.0.options.samples_per_task="
        "{temporal_grounding: 2, tracking: 2, grounded_qa: 2, mcq: 2}",
        "build_dataset.val_fraction=0.25",
    )
    for stage in ("download", "extract_frames", "build_dataset"):
        get_stage(stage)(params, root)
    build_tiny_model(root / "tiny-model", seed=0)
    return root, params


# Two xdist workers on two cores: one torch thread each, or they oversubscribe the CPU (steps
# measured 10x slower). Subprocesses (DVC stages, CLI runs) inherit OMP_NUM_THREADS.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
