"""End-to-end runs of the data pipeline: the real Prefect (temporary server) and the DVC CLI.

Each test works in a throw-away copy of the project (git repo + DVC repo) with a smaller
synthetic dataset, so the checkout itself is never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TEST_PRESET
from videorft.errors import VideoRFTError
from videorft.params import update_params
from videorft.pipeline.command import run_lock

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e
SMALL = [
    "download.sources.0.options.samples_per_task="
    "{temporal_grounding: 2, tracking: 2, grounded_qa: 2, mcq: 2}",
    "download.sources.0.options.max_duration_s=5.0",
    # Training kept to a few steps: this file tests orchestration, not learning.
    "warm_start.max_steps=3",
    "train.max_steps=2",
    "train.save_steps=1",
    "train.num_generations=2",
    "train.per_device_train_batch_size=2",  # one prompt per step: any split fits
    "train.max_completion_length=8",
    "evaluate.max_new_tokens=8",
    # A few training steps prove nothing about quality: the gate is tested in test_publish.
    "publish.gate.max_regression=1.0",
]
N_STAGES = 8


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
        # The project's own copy of the code runs (the one DVC hashes), not the checkout's.
        PYTHONPATH=str(tmp_path / "proj"),
        # A loaded 2-core machine can take longer than Prefect's default 20 s to start it.
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        # `git commit` and `dvc exp run` need an identity; CI machines have none configured.
        GIT_AUTHOR_NAME="videorft tests", GIT_AUTHOR_EMAIL="tests@videorft.invalid",
        GIT_COMMITTER_NAME="videorft tests", GIT_COMMITTER_EMAIL="tests@videorft.invalid",
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
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, proj / ".dvc" / name)
    for package in ("videorft", "flows", "tasks", "configs"):
        shutil.copytree(
            ROOT / package, proj / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    update_params(proj / "params.yaml", preset=TEST_PRESET, overrides=SMALL)
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


SECRETS = {"HF_TOKEN": "hf_e2eSECRETtoken0123456789",
           "AWS_SECRET_ACCESS_KEY": "e2eSECRETawsKey98765"}


def _files_holding(folder: Path, secret: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]


def test_run_through_prefect_then_nothing_to_redo(
    project: Path, tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Publish to the loopback S3 server too, with secrets in the environment that the run uses
    # (AWS) or could leak (HF token): afterwards no file, log or Prefect artifact may hold them.
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    s3_server.create_bucket("models")
    update_params(project / "params.yaml", overrides=[
        "publish.targets=[{type: local, uri: registry}, {type: s3, uri: 's3://models/videorft', "
        f"endpoint_url: '{s3_server.endpoint_url}'}}]"])
    first = _videorft(project, tmp_path, "run")
    assert first.returncode == 0, first.stdout + first.stderr
    # A calm terminal: a line as each stage starts and ends, no DVC git hints, no Prefect INFO
    # chatter; all of that is in reports/run.log, which the summary names.
    for stage in ("download", "extract_frames", "train", "evaluate", "publish"):
        assert f"{stage:<15} running ..." in first.stderr, first.stderr
        assert re.search(rf"{stage}\s+ran in [0-9.]+ s", first.stderr), first.stderr
    assert "git add" not in first.stderr and "| INFO" not in first.stderr, first.stderr
    run_log = (project / "reports/run.log").read_text()
    assert "Running stage 'train'" in run_log and "Finished in state Completed" in run_log
    assert "git add dvc.lock" in run_log  # DVC's advice: in the log, not on the terminal
    terminal = (first.stdout + first.stderr).splitlines()
    assert len(terminal) <= 60, "\n".join(terminal)
    assert "reports/run.log" in first.stdout
    published = json.loads((project / "reports/publish.json").read_text())
    assert [t["type"] for t in published["targets"]] == ["local", "s3"]
    assert s3_server.filesystem().exists(
        f"models/videorft/{published['name']}/{published['version']}/manifest.json")
    prefect_db = tmp_path / "prefect-home"
    # The run's logs and artifacts live in the temporary server's database: search it too.
    assert b"videorft-eval" in b"".join(p.read_bytes() for p in prefect_db.rglob("*.db*"))
    for secret in SECRETS.values():
        assert secret not in first.stdout + first.stderr
        for folder in (project, prefect_db, tmp_path / "prefect-results"):
            assert not _files_holding(folder, secret.encode()), secret
    stats = json.loads((project / "reports" / "dataset.json").read_text())
    assert stats["counts"]["train"] and sum(sum(c.values()) for c in stats["counts"].values()) == 8
    train = [json.loads(line) for line in (project / "data/dataset/train.jsonl").open()]
    assert all(row["prompt"] and row["frames_key"] for row in train)
    assert (project / "dvc.lock").exists()
    assert (project / "models/trained/model.safetensors").is_file()
    assert (project / "reports/train/metrics.json").is_file()
    evaluation = json.loads((project / "reports/eval/metrics.json").read_text())
    assert set(evaluation["models"]) == {"base", "warm_start", "trained"}
    assert (project / "registry" / published["name"] / published["version"]
            / "manifest.json").is_file()
    produced = _outputs(project)

    second = _videorft(project, tmp_path, "run")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("skipped (up to date)") == N_STAGES, second.stdout
    assert "nothing to do" in second.stderr  # one `dvc status`; no Prefect server started
    assert "Starting temporary server" not in second.stderr
    assert _outputs(project) == produced

    # One dataset param changed: only build_dataset reruns, and says why.
    third = _videorft(project, tmp_path, "run", "--json", "--set", "build_dataset.val_fraction=0.5")
    assert third.returncode == 0, third.stdout + third.stderr
    outcomes = {o["stage"]: o for o in json.loads(third.stdout)}
    assert not outcomes["download"]["ran"] and not outcomes["extract_frames"]["ran"]
    assert outcomes["build_dataset"]["ran"]
    assert not outcomes["base_model"]["ran"]
    assert outcomes["warm_start"]["ran"] and outcomes["train"]["ran"]  # new training data
    assert outcomes["evaluate"]["ran"] and outcomes["publish"]["ran"]
    assert any("build_dataset.val_fraction" in r for r in outcomes["build_dataset"]["reasons"])

    # One training param changed: train and publish (whose card names the recipe) rerun, and
    # evaluate exactly when the trained model's bytes changed (the run facts are not in them:
    # a recipe change that leaves the weights as they were is not evaluated twice); nothing
    # before train reruns.
    weights = (project / "models/trained/model.safetensors").read_bytes()
    fourth = _videorft(project, tmp_path, "run", "--json", "--set", "train.learning_rate=0.0002")
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    ran = [o["stage"] for o in json.loads(fourth.stdout) if o["ran"]]
    changed = (project / "models/trained/model.safetensors").read_bytes() != weights
    assert ran == (["train", "evaluate", "publish"] if changed else ["train", "publish"]), ran


def _out_hashes(proj: Path) -> dict[str, str]:
    """Every stage's outputs in ``dvc.lock``: path -> DVC hash."""
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", [])}


def test_dvc_repro_alone_matches_a_twin_then_up_to_date(project: Path, tmp_path: Path) -> None:
    """Plain ``dvc repro`` runs the DAG; a twin project elsewhere, run on its own, ends with
    the same hash for every output (same inputs, same bytes: no times, run facts or absolute
    paths in what DVC tracks, models and package included); a second repro does nothing."""
    twin_tmp = tmp_path / "twin"
    shutil.copytree(project, twin_tmp / "proj", symlinks=True)
    first = _dvc(project, tmp_path, "repro")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (project / "data/dataset/train.jsonl").stat().st_size > 0
    twin = _dvc(twin_tmp / "proj", twin_tmp, "repro")
    assert twin.returncode == 0, twin.stdout + twin.stderr
    ours, theirs = _out_hashes(project), _out_hashes(twin_tmp / "proj")
    assert len(ours) >= N_STAGES and ours.keys() == theirs.keys()
    assert [path for path in ours if ours[path] != theirs[path]] == []
    second = _dvc(project, tmp_path, "repro")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "didn't change, skipping" in second.stdout
    assert "Running stage" not in second.stdout
    status = _videorft(project, tmp_path, "status")
    assert status.returncode == 0 and status.stdout.count("up to date") == N_STAGES, status.stdout
    metrics = _dvc(project, tmp_path, "metrics", "show", "--json")
    assert metrics.returncode == 0 and "reports/eval/metrics.json" in metrics.stdout
    plots = _dvc(project, tmp_path, "plots", "show", "-o", str(tmp_path / "plots"))
    assert plots.returncode == 0, plots.stdout + plots.stderr
    assert (tmp_path / "plots" / "index.html").is_file()
    lineage = json.loads((project / "models/package/lineage.json").read_text())
    assert "published model: videorft-tiny" in status.stdout  # and what it was built from:
    assert lineage["dvc"]["dataset"]["md5"] in status.stdout
    assert lineage["dvc"]["trained"]["md5"] in status.stdout

    # DVC experiments on top of a commit: `-S` changes one param and reruns what depends on
    # it (here publish only: params are narrowed per stage in dvc.yaml).
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, env=_env(tmp_path))
    subprocess.run(["git", "commit", "-qm", "tiny run"], cwd=project, check=True,
                   env=_env(tmp_path))
    exp = _dvc(project, tmp_path, "exp", "run", "-S", "publish.name=videorft-exp")
    assert exp.returncode == 0, exp.stdout + exp.stderr
    assert exp.stdout.count("Running stage") == 1 and "Running stage 'publish'" in exp.stdout
    assert json.loads((project / "reports/publish.json").read_text())["name"] == "videorft-exp"
    shown = _dvc(project, tmp_path, "exp", "show", "--json")
    assert shown.returncode == 0 and "videorft-exp" in shown.stdout, shown.stderr
    diff = _dvc(project, tmp_path, "params", "diff", "--json")
    assert diff.returncode == 0, diff.stderr
    assert json.loads(diff.stdout)["params.yaml"]["publish.name"]["new"] == "videorft-exp"
    metrics_diff = _dvc(project, tmp_path, "metrics", "diff", "--json")
    assert metrics_diff.returncode == 0, metrics_diff.stderr


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


def test_a_failing_stage_ends_the_run_with_one_error_line(project: Path, tmp_path: Path) -> None:
    """Bad input in a stage: the terminal shows the stage's own error, then one line naming the
    file and the problem, not Prefect's task and flow failures with their traceback; the run's
    log keeps those in full."""
    update_params(project / "params.yaml", overrides=[
        "download.sources=[{name: disk, type: charades_sta, uri: no-such-folder, "
        "annotation: a.txt}]"])
    run = _videorft(project, tmp_path, "run")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "Finished in state" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    log = project / "reports" / "run.log"
    assert last == (f"error: stage 'download' failed: no-such-folder: local path "
                    f"{project / 'no-such-folder'} does not exist (full output: {log})"), last
    logged = log.read_text(encoding="utf-8")
    assert "Traceback" in logged and "Encountered exception during execution" in logged
