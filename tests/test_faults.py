"""Fault injection: `kill -9` a real `videorft run` during extraction, training and publishing,
run it again, and compare with an uninterrupted run; and two runs started at once.

The kill takes the whole process group (the CLI, DVC, the stage and its workers), as a dying
machine would. Every scenario starts from state an uninterrupted reference run produced (one
full run for the module), so each costs only the stages it redoes:

- extraction: a fresh project (the reference's code and params, nothing run), extraction
  slowed through the extractor's test hook (``VIDEORFT_EXTRACT_TEST_HOOK``), killed once some
  items are in the frame store but before its manifest; the rerun skips download and must
  give the reference's bytes everywhere.
- training: a copy of the reference without its training outputs, killed as soon as
  ``checkpoint-1`` is complete; the rerun resumes from it and must end where the reference did.
- publishing: a copy without the package, uploading to S3 through a gate that holds the second
  object PUT (a slow link, but deterministic): killed with one object uploaded and no manifest;
  the rerun must publish exactly one copy of each file and the reference's manifest.

The copies are the state a kill leaves: the killed stage's outputs gone, no dvc.lock entry for
it and no DVC run-cache entry (with either, DVC would check the reference's outputs out of its
cache instead of running the stage). Concurrency: two `videorft run` started at once in one
copy; one runs, the other is refused, and DVC's state stays clean.

All runs report to one Prefect server for the module (a temporary server per CLI call costs
20-40 s on two cores).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import DATA_STAGES, TEST_PRESET
from tests.servers import S3_ENV, free_port
from tests.test_pipeline_e2e import ROOT, SMALL, _env
from videorft.params import update_params
from videorft.pipeline.lockfile import locked_stages, read_lock, write_lock
from videorft.publish.package import same_package

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

BUCKET = "bucket"
S3_URI = f"s3://{BUCKET}/x"
PACKAGE = "videorft-tiny"  # publish.name in params.yaml
HOOK_ENV = "VIDEORFT_EXTRACT_TEST_HOOK"  # videorft.video.extract.TEST_HOOK_ENV
# Three GRPO steps, a checkpoint after each: the kill lands after the first, two remain. The
# tiny model earns no reward in 8 tokens (advantages are all 0); weight decay moves the policy
# off the reference model at every step, so the KL term gives gradients and each step changes
# weights and optimizer state: a resume that lost either would not end at the same weights.
PARAMS = [*SMALL, "train.max_steps=3", "train.save_steps=1", "train.weight_decay=0.1"]


# --------------------------------------------------------------------------- S3 with a gate


class S3Gate:
    """WSGI wrapper around moto's app: when armed, object PUTs after the first ``allow`` are held
    until released (then answered 503 without reaching moto, the client being dead by then).

    Polling the bucket for "some objects but no manifest" races an upload that takes a few
    hundred milliseconds; holding the next PUT opens that window for as long as the test needs,
    without a sleep in the code under test.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.endpoint_url = ""
        self.allow: int | None = None
        self.puts = 0
        self.holding = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def arm(self, allow: int) -> None:
        with self._lock:
            self.allow, self.puts = allow, 0
        self.holding.clear()
        self.release.clear()

    def disarm(self) -> None:
        with self._lock:
            self.allow = None
        self.release.set()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["REQUEST_METHOD"] == "PUT" and environ.get("PATH_INFO", "").startswith(
            f"/{BUCKET}/"
        ):
            with self._lock:
                self.puts += 1
                hold = self.allow is not None and self.puts > self.allow
            if hold:
                self.holding.set()
                self.release.wait(120)
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"held by the test gate"]
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def gated_s3() -> Iterator[S3Gate]:
    """A second moto endpoint (same in-process state as the ``s3_server`` fixture's) behind
    :class:`S3Gate`, for the whole module: its URL is in the reference's publish params, which
    are part of the package, so it must not change between the reference and the copies."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    gate = S3Gate(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, gate, threaded=True, request_handler=MotoRequestHandler)
    gate.endpoint_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="gated-s3", daemon=True)
    thread.start()
    try:
        yield gate
    finally:
        gate.disarm()
        server.shutdown()
        thread.join(timeout=5)


def _create_bucket(endpoint_url: str) -> None:
    import boto3

    boto3.client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1",
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=BUCKET)


# --------------------------------------------------------------------------- projects and runs


def _run_env(proj: Path, home: Path, api_url: str, **extra: str) -> dict[str, str]:
    """A CLI's environment: its own PREFECT_HOME, the module's Prefect server, fake S3 creds,
    and the project's own code first on the path, for the stages too (DVC runs them as the
    `videorft` script, which would import the checkout's code: the code DVC hashes must be the
    code that runs, even while the checkout is being edited)."""
    env = _env(home)
    env.update(S3_ENV, PREFECT_API_URL=api_url, PYTHONPATH=str(proj),
               AWS_CONFIG_FILE="/nonexistent/aws-config",
               AWS_SHARED_CREDENTIALS_FILE="/nonexistent/aws-credentials",
               NO_PROXY="127.0.0.1,localhost")
    env.pop(HOOK_ENV, None)
    env.update(extra)
    return env


def _new_project(proj: Path, endpoint_url: str) -> Path:
    """A checkout-like project (code, dvc.yaml, params.yaml; git + DVC) with PARAMS and one S3
    publish target on the gated endpoint. The code is copied too, flows and tasks included, so
    a project stays one consistent snapshot."""
    proj.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, proj / name)
    (proj / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    for package in ("videorft", "flows", "tasks", "configs"):
        shutil.copytree(ROOT / package, proj / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    update_params(proj / "params.yaml", preset=TEST_PRESET, overrides=[
        *PARAMS,
        f"publish.targets=[{{type: s3, uri: '{S3_URI}', endpoint_url: '{endpoint_url}'}}]",
    ])
    return proj


def _fresh_copy(src: Path, dest: Path) -> Path:
    """``src`` as it was before its first run: same code and params, no outputs, no DVC state."""
    produced = {"data", "models", "reports", "dvc.lock", "cache", "tmp", "__pycache__"}
    shutil.copytree(src, dest, ignore=lambda _, names: [n for n in names if n in produced])
    return dest


def _copy_project(src: Path, dest: Path, *, unlock: list[str], drop: list[str]) -> Path:
    """A copy of ``src`` as if the stages ``unlock`` had never completed there: their outputs
    ``drop`` gone, no dvc.lock entry and no DVC run cache (with either, DVC would check the
    old outputs out of its cache instead of running the stage)."""
    shutil.copytree(src, dest, symlinks=True)
    for rel in [*drop, ".dvc/cache/runs"]:
        path = dest / rel
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    lock = read_lock(dest, roundtrip=True)
    for stage in unlock:
        del lock["stages"][stage]
    write_lock(dest, lock)
    return dest


def _command(proj: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "videorft", *args, "--root", str(proj)]


def _videorft(proj: Path, home: Path, api_url: str, *args: str) -> list[dict[str, Any]]:
    """Run the CLI to the end with ``--json``; its outcomes."""
    done = subprocess.run(_command(proj, *args, "--json"), cwd=proj,
                          env=_run_env(proj, home, api_url), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    return json.loads(done.stdout)


def _start(proj: Path, home: Path, api_url: str, log: Path, *args: str,
           **extra_env: str) -> subprocess.Popen:
    """The CLI (``--json``) in a session of its own (its process group: DVC, the stages and
    their workers); stderr to ``log``, stdout to ``log`` + ``.json`` (a pipe nobody reads
    would stall it)."""
    with log.open("wb") as err, Path(f"{log}.json").open("wb") as out:
        return subprocess.Popen(_command(proj, *args, "--json"), cwd=proj,
                                env=_run_env(proj, home, api_url, **extra_env), stdout=out,
                                stderr=err, start_new_session=True)


def _group_alive(pgid: int) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def _kill_when(proc: subprocess.Popen, log: Path, ready: Callable[[], bool],
               what: str, timeout: float = 420.0) -> None:
    """SIGKILL ``proc``'s whole process group as soon as ``ready()``; then check that nothing of
    it survives (a stray worker writing on would spoil the rerun)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}:\n"
                        + log.read_text(errors="replace")[-5000:])
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {what} within {timeout:.0f} s")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (left := _group_alive(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes survived the kill: {[p.pid for p in left]}"


def _ran(outcomes: list[dict[str, Any]]) -> dict[str, bool]:
    return {o["stage"]: o["ran"] for o in outcomes}


def _tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256): equal dicts mean no file lost,
    duplicated, left over or changed."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _data_outputs(proj: Path) -> dict[str, Any]:
    return {
        "records": (proj / "data/records.jsonl").read_bytes(),
        "dataset": _tree_hashes(proj / "data/dataset"),
        "frames": _tree_hashes(proj / "data/frames"),
        "reports": [(proj / "reports" / n).read_bytes() for n in ("frames.json", "dataset.json")],
    }


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Prefect server (own process group and PREFECT_HOME) for every run here.

    Without it each CLI call starts a temporary server with a fresh database: 20-40 s apiece on
    two busy cores, most of this module's time. A kill takes the run, not this server, as when
    the server runs elsewhere; a killed flow run just stays "Running" in its history.
    """
    import httpx

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = _env(home)
    env.pop("PREFECT_API_URL", None)
    with (home / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port), "--no-ui"],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Prefect server did not start:\n"
                            + (home / "server.log").read_text(errors="replace")[-4000:])
            try:
                if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield api_url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)


@dataclass
class Reference:
    proj: Path  # the project after one uninterrupted full run
    api: str  # the Prefect API every run here reports to


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory, gated_s3: S3Gate, prefect_api: str
        ) -> Reference:
    """One uninterrupted full run: what every interrupted run must end up with."""
    base = tmp_path_factory.mktemp("fault-reference")
    proj = _new_project(base / "proj", gated_s3.endpoint_url)
    _create_bucket(gated_s3.endpoint_url)
    outcomes = _videorft(proj, base, prefect_api, "run")
    (base / "outcomes.json").write_text(json.dumps(outcomes, indent=2))  # for the curious
    assert all(_ran(outcomes).values()), outcomes
    return Reference(proj, prefect_api)


# --------------------------------------------------------------------------- scenarios


def test_kill_during_extraction_then_rerun_matches(ref: Reference, tmp_path: Path) -> None:
    proj = _fresh_copy(ref.proj, tmp_path / "proj")
    items, manifest = proj / "data/frames/items", proj / "data/frames/manifest.json"
    total = len(_read(ref.proj / "data/frames/manifest.json")["items"])
    log = tmp_path / "killed.log"
    # Each item sleeps 1 s in its worker first: the kill lands between two items' writes.
    proc = _start(proj, tmp_path, ref.api, log, "run", "--to", "build_dataset",
                  **{HOOK_ENV: "sleep=1"})
    _kill_when(proc, log, lambda: any(items.glob("*.json")) and not manifest.exists(),
               "a frame-store item")
    done = len(list(items.glob("*.json")))
    assert 0 < done < total and not manifest.exists(), (done, total)
    assert "download" in locked_stages(proj), "download finished before the kill: it is locked"
    assert "extract_frames" not in locked_stages(proj), "the killed stage must not be locked"

    outcomes = _videorft(proj, tmp_path, ref.api, "run", "--to", "build_dataset")
    assert _ran(outcomes) == {"download": False, "extract_frames": True, "build_dataset": True}
    extracted = next(o for o in outcomes if o["stage"] == "extract_frames")["summary"]
    # What the killed run finished is kept, the rest is done once.
    assert extracted["reused"] >= done and extracted["extracted"] == total - extracted["reused"]
    assert _data_outputs(proj) == _data_outputs(ref.proj)
    for stage in DATA_STAGES:  # the same data: the same DVC hashes as the reference's
        assert locked_stages(proj)[stage]["outs"] == locked_stages(ref.proj)[stage]["outs"], stage


def test_kill_during_training_resumes_to_the_same_model(
    ref: Reference, s3_server: Any, tmp_path: Path
) -> None:
    s3_server.create_bucket(BUCKET)  # (moto was reset: the reference's upload is gone)
    proj = _copy_project(ref.proj, tmp_path / "proj", unlock=["train"],
                         drop=["models/checkpoints", "models/trained", "reports/train"])
    checkpoints = proj / "models/checkpoints"
    log = tmp_path / "killed.log"
    proc = _start(proj, tmp_path, ref.api, log, "run")
    _kill_when(proc, log, lambda: (checkpoints / "checkpoint-1/trainer_state.json").is_file(),
               "complete checkpoint-1")
    assert not (proj / "models/trained").exists(), "the kill came after training ended"
    assert not (checkpoints / "checkpoint-3").exists()

    outcomes = _videorft(proj, tmp_path, ref.api, "run")
    ran = _ran(outcomes)
    # The resumed run ends with the reference's model, byte for byte (no run facts in it), so
    # DVC finds evaluate's and publish's inputs unchanged: only train reruns.
    assert [s for s, r in ran.items() if r] == ["train"], outcomes
    summary = next(o for o in outcomes if o["stage"] == "train")["summary"]
    assert summary["checkpoints"] == "resume" and summary["resumed_from_step"] in (1, 2), summary

    ours = _read(proj / "models/trained/training_summary.json")
    theirs = _read(ref.proj / "models/trained/training_summary.json")
    assert ours["global_step"] == theirs["global_step"] == 3
    assert ours == theirs
    # No run times in DVC's outputs, so the metrics match exactly.
    assert _read(proj / "reports/train/metrics.json") == _read(
        ref.proj / "reports/train/metrics.json")
    # Every metric's history: each step exactly once (the killed run's steps not kept twice).
    assert _history(proj) == _history(ref.proj)
    # The same checkpoints (rotated alike, none left over) with the same weights and optimizer.
    ours_ckpt, ref_ckpt = _tree_hashes(checkpoints), _tree_hashes(ref.proj / "models/checkpoints")
    assert sorted(ours_ckpt) == sorted(ref_ckpt)
    for name in ("model.safetensors", "optimizer.pt"):
        assert ours_ckpt[f"checkpoint-3/{name}"] == ref_ckpt[f"checkpoint-3/{name}"], name
    assert _tree_hashes(proj / "models/trained") == _tree_hashes(ref.proj / "models/trained")
    assert _read(proj / "reports/eval/metrics.json") == _read(
        ref.proj / "reports/eval/metrics.json")


def test_kill_during_publishing_then_one_complete_copy(
    ref: Reference, gated_s3: S3Gate, s3_server: Any, tmp_path: Path
) -> None:
    s3_server.create_bucket(BUCKET)
    proj = _copy_project(ref.proj, tmp_path / "proj", unlock=["publish"],
                         drop=["models/package", "reports/publish.json", "reports/gate.md"])
    expected = _read(ref.proj / "models/package/manifest.json")
    version_dir = f"{BUCKET}/x/{PACKAGE}/{expected['version']}"
    fs = s3_server.filesystem()
    log = tmp_path / "killed.log"
    gated_s3.arm(allow=1)  # the first object goes up, the second is held
    try:
        proc = _start(proj, tmp_path, ref.api, log, "run")
        _kill_when(proc, log, gated_s3.holding.is_set, "a second object upload")
        uploaded = fs.find(f"{BUCKET}/")
        assert len(uploaded) == 1 and uploaded[0].startswith(version_dir + "/"), uploaded
        assert not fs.exists(f"{version_dir}/manifest.json")
    finally:
        gated_s3.disarm()

    outcomes = _videorft(proj, tmp_path, ref.api, "run")
    ran = _ran(outcomes)
    assert [s for s, r in ran.items() if r] == ["publish"], outcomes
    published = _read(proj / "reports/publish.json")
    assert published["version"] == expected["version"]
    assert [t["status"] for t in published["targets"]] == ["published"]
    fs = s3_server.filesystem()  # a new one: the one above has the bucket listing cached
    ours = json.loads(fs.cat_file(f"{version_dir}/manifest.json"))
    assert same_package(ours, expected), "the rerun published a different package"
    assert ours == _read(proj / "models/package/manifest.json")
    # Exactly one copy of each file, the manifest and `latest`: nothing duplicated or lost.
    listed = sorted(p[len(f"{BUCKET}/x/{PACKAGE}/"):] for p in fs.find(f"{BUCKET}/"))
    wanted = sorted([*(f"{expected['version']}/{f}" for f in expected["files"]),
                     f"{expected['version']}/manifest.json", "latest"])
    assert listed == wanted
    for rel, entry in expected["files"].items():
        data = fs.cat_file(f"{version_dir}/{rel}")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])


def test_two_runs_at_once_one_refused_state_intact(ref: Reference, tmp_path: Path) -> None:
    proj = _copy_project(ref.proj, tmp_path / "proj", unlock=["extract_frames", "build_dataset"],
                         drop=["data/frames", "data/dataset"])
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    procs = [_start(proj, tmp_path, ref.api, log, "run", "--to", "build_dataset")
             for log in logs]
    finished: list[int] = []
    deadline = time.monotonic() + 420
    while len(finished) < 2 and time.monotonic() < deadline:
        finished += [i for i, p in enumerate(procs) if i not in finished and p.poll() is not None]
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert len(finished) == 2, "the runs did not finish in time"
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], [log.read_text(errors="replace")[-3000:] for log in logs]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert finished[0] == loser, "the refused run should end while the other one still runs"
    refusal = logs[loser].read_text(errors="replace")
    assert "another videorft run is in progress" in refusal, refusal[-3000:]
    outcomes = json.loads(Path(f"{logs[winner]}.json").read_text())
    assert _ran(outcomes) == {"download": False, "extract_frames": True, "build_dataset": True}

    assert _data_outputs(proj) == _data_outputs(ref.proj)
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=proj,
                            env=_run_env(proj, tmp_path, ref.api), capture_output=True, text=True,
                            timeout=300)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Data and pipelines are up to date" in status.stdout, status.stdout  # all 8 stages
    again = _videorft(proj, tmp_path, ref.api, "run", "--to", "build_dataset")
    assert not any(_ran(again).values()), again


# --------------------------------------------------------------------------- comparisons


def _history(proj: Path) -> dict[str, list[tuple[int, str]]]:
    """Each logged metric -> its (step, value) rows."""
    root = proj / "reports/train/plots/metrics"
    history = {}
    for path in sorted(root.rglob("*.tsv")):
        name = path.relative_to(root).as_posix()
        header, *lines = path.read_text().splitlines()
        step = header.split("\t").index("step")
        history[name] = [(int(f[step]), f[-1]) for f in (line.split("\t") for line in lines)]
    return history
