"""End-to-end runs of the data pipeline: the real Prefect (temporary server) and the DVC CLI.

Each test works in a throw-away copy of the project (git repo + DVC repo) with a smaller
synthetic dataset, so the checkout itself is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from videorft.errors import VideoRFTError
from videorft.params import update_params
from videorft.pipeline.dvc import run_lock

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e
SMALL = [
    "download.sources.0.options.samples_per_task="
    "{temporal_grounding: 2, tracking: 2, grounded_qa: 2, mcq: 2}",
    "download.sources.0.options.max_duration_s=5.0",
]


def _env(tmp_path: Path) -> dict[str, str]:
    env = os.environ.copy()
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "prefect-results"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        DVC_NO_ANALYTICS="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh checkout-like copy: dvc.yaml, params.yaml, the code DVC hashes, git + DVC."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, proj / name)
    (proj / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    shutil.copytree(
        ROOT / "videorft", proj / "videorft", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    update_params(proj / "params.yaml", overrides=SMALL)
    return proj


def _videorft(proj: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videorft", *args, "--root", str(proj)],
        cwd=proj,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _dvc(proj: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=proj,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _outputs(proj: Path) -> dict[str, bytes]:
    files = [
        *sorted((proj / "data" / "dataset").glob("*.jsonl")),
        proj / "data/records.jsonl",
        proj / "data/frames/manifest.json",
    ]
    return {str(f.relative_to(proj)): f.read_bytes() for f in files}


def test_run_through_prefect_then_nothing_to_redo(project: Path, tmp_path: Path) -> None:
    first = _videorft(project, tmp_path, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    stats = json.loads((project / "reports" / "dataset.json").read_text())
    assert stats["counts"]["train"] and sum(sum(c.values()) for c in stats["counts"].values()) == 8
    train = [json.loads(line) for line in (project / "data/dataset/train.jsonl").open()]
    assert all(row["prompt"] and row["frames_key"] for row in train)
    assert (project / "dvc.lock").exists()
    produced = _outputs(project)

    second = _videorft(project, tmp_path, "run")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("skipped (up to date)") == 3, second.stdout
    assert _outputs(project) == produced

    # One dataset param changed: only build_dataset reruns, and says why.
    third = _videorft(project, tmp_path, "run", "--json", "--set", "build_dataset.val_fraction=0.5")
    assert third.returncode == 0, third.stdout + third.stderr
    outcomes = {o["stage"]: o for o in json.loads(third.stdout)}
    assert not outcomes["download"]["ran"] and not outcomes["extract_frames"]["ran"]
    assert outcomes["build_dataset"]["ran"]
    assert any("build_dataset.val_fraction" in r for r in outcomes["build_dataset"]["reasons"])


def test_dvc_repro_alone_then_up_to_date(project: Path, tmp_path: Path) -> None:
    first = _dvc(project, tmp_path, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (project / "data/dataset/train.jsonl").stat().st_size > 0
    second = _dvc(project, tmp_path, "repro")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "didn't change, skipping" in second.stdout
    assert "Running stage" not in second.stdout
    status = _videorft(project, tmp_path, "status")
    assert status.returncode == 0 and status.stdout.count("up to date") == 3, status.stdout


def test_second_run_in_same_checkout_is_refused(project: Path, tmp_path: Path) -> None:
    with run_lock(project):
        with (
            pytest.raises(VideoRFTError, match="another videorft run is in progress"),
            run_lock(project),
        ):
            pass
        blocked = _videorft(project, tmp_path, "run")
    assert blocked.returncode == 1
    assert "another videorft run is in progress" in blocked.stderr
    assert not (project / "data").exists()
