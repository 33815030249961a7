"""Training on a GPU work pool: the pipeline submits the train stage to the deployment
`videorft-train/gpu` (the repo's prefect.yaml), a worker runs it in its own checkout, and the
outputs come back through a DVC remote.

Everything is real and on loopback: `prefect server start`, `prefect work-pool create --type
process`, `prefect deploy --all` (the repo's prefect.yaml), `prefect worker start`, `videorft
run`, the DVC CLI, and the DVC remote on the moto S3 server. The upstream stages are prepared
with `dvc repro warm_start` while the server boots (no Prefect needed for that), with the
small params of test_pipeline_e2e.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PRESET
from tests.servers import free_port
from tests.test_pipeline_e2e import SMALL
from videorft.errors import UnsafePathError
from videorft.params import update_params
from videorft.pipeline import handoff
from videorft.pipeline import remote as remote_mod
from videorft.stages import stage_names

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOYMENT = "videorft-train/gpu"


# The pipeline's train task alone, in a flow: resubmits training (force) to the deployment.
RETRAIN = """
import sys
from prefect import flow
from tasks.stages import train
from videorft.errors import StageError

@flow(name="retrain")
def retrain(root: str) -> dict:
    return train(root, force=True)

try:
    retrain(sys.argv[1])
except StageError as exc:
    sys.exit(f"StageError: {exc}")
"""


def _env(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """A process's environment: its own PREFECT_HOME (a separate machine, as far as Prefect
    knows), the test server's API (or none), this venv first on PATH."""
    env = os.environ.copy()
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_LOCAL_STORAGE_PATH=str(home / "results"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        DVC_NO_ANALYTICS="1",
        PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
        **extra,
    )
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


class Background:
    """Long-running subprocesses (server, worker), each in its own process group, stopped (the
    group: uvicorn, flow-run children) at teardown; their output goes to a log file."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], *, env: dict[str, str], cwd: Path) -> None:
        log = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((name, proc))

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def check_alive(self, name: str) -> None:
        proc = dict(self.procs)[name]
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=10)

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(proc.pid, sig)  # the group this process leads: its children too


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Background]:
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = Background(logs)
    try:
        yield procs
    finally:
        procs.stop()


def _run(args: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def _checkout(dest: Path) -> Path:
    """What a `git clone` of the repo holds that matters here: code, dvc.yaml, params.yaml,
    prefect.yaml; no data, no dvc.lock, no DVC cache."""
    dest.mkdir()
    for name in ("dvc.yaml", "params.yaml", "prefect.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, dest / name)
    (dest / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", dest / ".dvc" / "config")
    for package in ("videorft", "flows", "tasks", "configs"):
        shutil.copytree(ROOT / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _wait_healthy(api_url: str, background: Background, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        background.check_alive("server")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"Prefect server not healthy after {timeout_s} s:\n{background.log('server')}")


def _deployment_runs(api_url: str, name: str) -> list[dict]:
    """The flow runs of deployment `name` ("flow/deployment"), as the server has them."""
    deployment = httpx.get(f"{api_url}/deployments/name/{name}", timeout=10)
    deployment.raise_for_status()
    runs = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [deployment.json()["id"]]}}},
        timeout=10,
    )
    runs.raise_for_status()
    return runs.json()


def _in_remote_already(proj: Path, home: Path) -> None:
    """Push the upstream stages' outputs and note it as `repro_stage` would: the state an
    earlier pipeline run leaves, so this run does not spend its time pushing them one by one."""
    url = remote_mod.configure_remote(proj, remote_mod.remote_settings(proj))
    assert url is not None
    _run([sys.executable, "-m", "dvc", "push", "--remote", remote_mod.REMOTE],
         env=_env(home), cwd=proj)
    names = stage_names(ROOT)
    for stage in names[:names.index("train")]:
        remote_mod.mark_in_remote(proj, url, stage, handoff.locked_entry(proj, stage))


def _serve_and_deploy(
    tmp_path: Path, background: Background, api_url: str, checkout: Path
) -> float:
    """Server, pool, deployment (the repo's prefect.yaml) and a worker polling it, as an
    operator would set them up. Returns when the worker started (time.monotonic())."""
    port = api_url.split(":")[2].split("/")[0]
    background.start(
        "server",
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", port,
         "--no-ui"],
        env=_env(tmp_path / "server-home"), cwd=tmp_path,
    )
    _wait_healthy(api_url, background)
    cli = _env(tmp_path / "cli-home", api_url)
    pools = [subprocess.Popen([str(BIN / "prefect"), "work-pool", "create", name, "--type",
                               "process"], cwd=checkout, env=cli, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for name in ("gpu", "cpu")]
    for proc in pools:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
    # Every deployment in prefect.yaml, as docs/gpu-workers.md says.
    _run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env=cli, cwd=checkout)
    background.start(
        "worker", [str(BIN / "prefect"), "worker", "start", "--pool", "gpu"],
        # The worker names its own checkout: prefect.yaml's pull step reads it on the worker.
        env=_env(tmp_path / "worker-home", api_url, VIDEORFT_CHECKOUT=str(checkout),
                 PREFECT_WORKER_QUERY_SECONDS="1"),
        cwd=tmp_path,
    )
    return time.monotonic()


@pytest.mark.e2e
def test_pipeline_trains_on_gpu_pool_through_deployment(
    tmp_path: Path, background: Background, s3_server
) -> None:
    started = time.monotonic()
    api_url = f"http://127.0.0.1:{free_port()}/api"
    # The GPU worker's own checkout: no data, no DVC cache; it gets everything through the
    # deployment's parameters and the remote.
    worker_checkout = _checkout(tmp_path / "gpu-box")
    with ThreadPoolExecutor(1) as pool:
        # Prefect comes up in the background while DVC alone prepares the pipeline's
        # checkout: the upstream stages done, so the run below only trains, evaluates, publishes.
        prefect_ready = pool.submit(_serve_and_deploy, tmp_path, background, api_url,
                                    worker_checkout)
        s3_server.create_bucket("dvc")
        proj = _checkout(tmp_path / "proj")
        update_params(proj / "params.yaml", preset=TEST_PRESET, overrides=[
            *SMALL, "orchestration.remote.url=s3://dvc/videorft",
            f"orchestration.remote.endpoint_url={s3_server.endpoint_url}",
            # Keep the test about orchestration: no SFT before GRPO.
            "warm_start.enabled=false", "evaluate.models=[base, trained]",
        ])
        _run([sys.executable, "-m", "dvc", "repro", "warm_start"],
             env=_env(tmp_path / "prep-home"), cwd=proj)
        _in_remote_already(proj, tmp_path / "prep-home")
        prepared = time.monotonic()
        deployed = prefect_ready.result()
    waited = time.monotonic()

    run = subprocess.run(
        [sys.executable, "-m", "videorft", "run", "--json", "--root", str(proj),
         "--set", f"orchestration.train_deployment={DEPLOYMENT}"],
        cwd=proj, env=_env(tmp_path / "pipeline-home", api_url),
        capture_output=True, text=True, timeout=600,
    )
    (background.logs / "pipeline.log").write_text(run.stdout + run.stderr)
    background.check_alive("worker")
    assert run.returncode == 0, run.stdout + run.stderr + background.log("worker")
    finished = time.monotonic()
    outcomes = {o["stage"]: o for o in json.loads(run.stdout)}

    # Training ran in a flow run of the deployment, on the worker, in the worker's checkout.
    train = outcomes["train"]
    assert train["ran"] and train["deployment"] == DEPLOYMENT
    runs = _deployment_runs(api_url, DEPLOYMENT)
    assert [(r["id"], r["state"]["type"]) for r in runs] == [(train["flow_run_id"], "COMPLETED")]
    assert (worker_checkout / "models/trained/model.safetensors").is_file()
    assert (worker_checkout / "data/frames").is_dir()  # pulled from the remote
    assert not (worker_checkout / "data/raw").exists()  # not a train input: never pulled
    assert s3_server.filesystem().exists(
        f"dvc/videorft/videorft-runs/train/{train['flow_run_id']}.json")

    # The pipeline's checkout got the model through the remote and agrees with DVC.
    trained = "models/trained/model.safetensors"
    assert (proj / trained).read_bytes() == (worker_checkout / trained).read_bytes()
    status = _run([sys.executable, "-m", "dvc", "status", "train"],
                  env=_env(tmp_path / "prep-home"), cwd=proj)
    assert "up to date" in status.stdout, status.stdout
    assert (proj / "reports/train/metrics.json").read_bytes() == (
        worker_checkout / "reports/train/metrics.json").read_bytes()

    # evaluate and publish ran after it, here, on the trained model.
    assert list(outcomes)[-3:] == ["train", "evaluate", "publish"]
    assert outcomes["evaluate"]["ran"] and outcomes["publish"]["ran"]
    assert "trained" in json.loads((proj / "reports/eval/metrics.json").read_text())["models"]
    assert json.loads((proj / "reports/publish.json").read_text())["published"] is not False

    # A training run that fails names the deployment and its flow run: the worker's checkout
    # loses dvc.yaml, and the train task alone (in a flow, as the pipeline runs it) resubmits.
    (worker_checkout / "dvc.yaml").unlink()
    failed = subprocess.run(
        [sys.executable, "-c", RETRAIN, str(proj)], cwd=proj,
        env=_env(tmp_path / "pipeline-home", api_url), capture_output=True, text=True,
        timeout=600,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    runs = _deployment_runs(api_url, DEPLOYMENT)
    failed_run = next(r for r in runs if r["id"] != train["flow_run_id"])
    assert failed_run["state"]["type"] == "FAILED"
    message = failed.stderr.splitlines()[-1]
    assert f"deployment '{DEPLOYMENT}', flow run '{failed_run['name']}' ({failed_run['id']})" \
        " ended Failed" in message, message
    assert "has no dvc.yaml" in message, message

    print(f"\ntimings: prepare {prepared - started:.0f} s, prefect ready {deployed - started:.0f}"
          f" s, pipeline run {finished - waited:.0f} s, total {time.monotonic() - started:.0f} s")


def test_handoff_files_stay_in_the_checkout(tmp_path: Path) -> None:
    """A record's `cache: false` outputs come from the remote: a path leaving the checkout is
    refused, and a folder is replaced whole (no stale file left to break `dvc status`)."""
    encoded = base64.b64encode(b"x").decode()
    with pytest.raises(UnsafePathError):
        handoff._put_output(tmp_path, "../outside.json", encoded)
    with pytest.raises(UnsafePathError):
        handoff._put_output(tmp_path, "plots", {"../../outside.tsv": encoded})
    assert not (tmp_path.parent / "outside.json").exists()
    handoff._put_output(tmp_path, "plots", {"a.tsv": encoded, "sub/b.tsv": encoded})
    handoff._put_output(tmp_path, "plots", {"a.tsv": encoded})
    assert sorted(p.name for p in (tmp_path / "plots").rglob("*")) == ["a.tsv"]
    handoff._put_output(tmp_path, "metrics.json", encoded)
    assert (tmp_path / "metrics.json").read_bytes() == b"x"
