"""Stage publish: the gate, the package (manifest, card, lineage), and the targets.

Local registry and S3 run for real (S3: the loopback moto server). The Hugging Face Hub cannot
be reached from a test, so ``HfApi`` is replaced by a recording stand-in: those tests check
what we ask of the Hub, not the Hub itself. No real model is needed: a fake model folder holds
a small safetensors file and the usual config/tokenizer files.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.conftest import project_params
from videorft.errors import StageError
from videorft.evaluation.report import compare
from videorft.io import sha256_file
from videorft.params import GateParams, PublishTarget
from videorft.publish import targets as targets_mod
from videorft.publish.gate import GateFailedError, check_gate, format_gate_report, parse_min_key
from videorft.publish.lineage import collect_lineage
from videorft.publish.package import (
    PackageIntegrityError,
    build_package,
    compute_version,
    verify_package,
)
from videorft.publish.targets import (
    PublishError,
    publish,
    publish_hub,
    publish_local,
    publish_s3,
)
from videorft.stages.publish import run as run_publish

if TYPE_CHECKING:  # registered as a plugin in conftest.py
    from tests.servers import S3Server

HF_SECRET = "hf_SECRET123doNotLeak456"
AWS_SECRET = "aws-SECRET-789-doNotLeak"


def _tg(miou: float, r5: float) -> dict[str, float]:
    return {"miou": miou, "r@0.3": 0.5, "r@0.5": r5, "r@0.7": 0.1, "count": 40}


def make_metrics(trained_miou: float = 0.32, trained_r5: float = 0.30, *,
                 half_width: float = 0.1) -> dict[str, Any]:
    """A hand-made evaluate-stage metrics.json: two sources, base vs trained, each delta with
    an interval of ``half_width`` either side."""
    metrics = {
        "models": {
            "base": {
                "charades_sta_test": {"temporal_grounding": _tg(0.30, 0.25),
                                      "mcq": {"accuracy": 0.50, "count": 20}},
                "anet.v1.3": {"temporal_grounding": _tg(0.20, 0.15)},
            },
            "trained": {
                "charades_sta_test": {"temporal_grounding": _tg(trained_miou, trained_r5),
                                      "mcq": {"accuracy": 0.55, "count": 20}},
                "anet.v1.3": {"temporal_grounding": _tg(0.22, 0.18)},
            },
        },
        "delta": {},
        "split": "test",
        "baseline": "base",
    }
    metrics["delta"] = compare(metrics["models"], "base")
    metrics["intervals"] = {"delta": {
        source: {task: {name: {"value": d, "low": d - half_width, "high": d + half_width}
                        for name, d in values.items()}
                 for task, values in tasks.items()}
        for source, tasks in metrics["delta"].items()
    }}
    metrics["bootstrap"] = {"samples": 2000, "confidence": 0.95, "seed": 0}
    return metrics


TABLE = "| Source | Task | Metric | base | trained |\n|---|---|---|---|---|\n" \
        "| charades_sta_test | temporal_grounding | miou | 0.300 | 0.320 |\n"


def make_model(folder: Path, *, seed: int = 0) -> Path:
    """A fake trained-model folder (weights, configs, tokenizer, summary, and files that must
    not be packaged: a pickle and a hidden file)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"lm_head.weight": rng.standard_normal((8, 4)).astype(np.float32)},
              str(folder / "model.safetensors"))
    files = {
        "config.json": {"model_type": "qwen2_5_vl", "hidden_size": 4},
        "generation_config.json": {"do_sample": False},
        "tokenizer.json": {"version": "1.0", "model": {"vocab": {"a": 0}}},
        "tokenizer_config.json": {"model_max_length": 128},
        "training_summary.json": {"steps": 3, "final_reward": 0.9},
    }
    for name, obj in files.items():
        (folder / name).write_text(json.dumps(obj), encoding="utf-8")
    (folder / "chat_template.jinja").write_text("{{ messages }}", encoding="utf-8")
    (folder / "training_args.bin").write_bytes(b"\x80\x04pickle")
    (folder / ".hidden").write_text("x", encoding="utf-8")
    return folder


DVC_LOCK = """schema: '2.0'
stages:
  build_dataset:
    cmd: videorft stage build_dataset
    outs:
    - path: data/dataset
      hash: md5
      md5: 1111aaaa2222bbbb3333cccc4444dddd.dir
      size: 1234
      nfiles: 2
  extract_frames:
    cmd: videorft stage extract_frames
    outs:
    - path: data/frames
      hash: md5
      md5: 5555eeee6666ffff7777000088889999.dir
      size: 99
      nfiles: 9
  train:
    cmd: videorft stage train
    outs:
    - path: models/checkpoints
      hash: md5
      md5: abcdabcdabcdabcdabcdabcdabcdabcd.dir
    - path: models/trained
      hash: md5
      md5: feedfacefeedfacefeedfacefeedface.dir
      size: 4321
      nfiles: 7
"""


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com",
         "-c", "commit.gpgsign=false", *args],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def make_project(root: Path, *overrides: str, metrics: dict[str, Any] | None = None,
                 with_git: bool = False):
    """A project folder with params, a trained model, evaluation outputs and dvc.lock."""
    params = project_params(root, *overrides)
    make_model(root / params.paths.trained)
    evaluation = root / params.paths.evaluation
    evaluation.mkdir(parents=True, exist_ok=True)
    (evaluation / "metrics.json").write_text(json.dumps(metrics or make_metrics()))
    (evaluation / "table.md").write_text(TABLE)
    (root / "dvc.lock").write_text(DVC_LOCK)
    if with_git:
        git(root, "init", "-q")
        (root / ".gitignore").write_text("/models/\n/reports/\n/registry/\n")
        git(root, "add", "params.yaml", "configs", "dvc.lock", ".gitignore")
        git(root, "commit", "-q", "-m", "init")
    return params


def build(root: Path, params, out: Path | None = None, *, gate=None) -> dict[str, Any]:
    metrics = make_metrics()
    gate = gate or check_gate(metrics, params.publish.gate, baseline="base")
    return build_package(
        root / params.paths.trained, out or root / params.paths.package,
        name=params.publish.name, metrics=metrics, table_md=TABLE,
        params_dict=params.model_dump(mode="json"),
        lineage=collect_lineage(root, params), gate_report=gate,
    )


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------- gate


def test_gate_passes_within_the_allowed_regression_and_fails_beyond_it() -> None:
    gate = GateParams(max_regression=0.05)
    small_drop = check_gate(make_metrics(trained_miou=0.26), gate, baseline="base")
    assert small_drop.passed and not small_drop.failures
    # two grounding sources x 4 metrics, plus mcq; each value and each interval
    assert small_drop.checked == 2 * (2 * 4 + 1)
    big_drop = check_gate(make_metrics(trained_miou=0.212), gate, baseline="base")
    assert not big_drop.passed
    assert big_drop.failures == [
        "charades_sta_test/temporal_grounding miou: trained 0.212 < base 0.300 - 0.05"
    ]
    text = format_gate_report(big_drop)
    assert "FAILED" in text and "trained 0.212 < base 0.300 - 0.05" in text


def test_gate_fails_a_significant_regression_and_passes_a_noisy_one() -> None:
    """A drop within max_regression fails when its interval is wholly below 0, and a larger
    drop with an interval reaching above 0 does not fail on significance."""
    gate = GateParams(max_regression=0.05)
    # trained miou 0.29 vs base 0.30: Δ -0.01 within max_regression; interval [-0.015, -0.005]
    significant = check_gate(make_metrics(trained_miou=0.29, half_width=0.005), gate,
                             baseline="base")
    assert not significant.passed
    assert significant.failures == [
        "charades_sta_test/temporal_grounding miou: trained − base = -0.010, 95% interval "
        "[-0.015, -0.005] wholly below 0 (significant regression)"
    ]
    text = format_gate_report(significant)
    assert "FAILED" in text and "[-0.015, -0.005] wholly below 0" in text
    assert "paired bootstrap interval is wholly below 0" in text
    # The same drop with a wider interval [-0.03, +0.01]: not significant, passes.
    noisy = check_gate(make_metrics(trained_miou=0.29, half_width=0.02), gate, baseline="base")
    assert noisy.passed, noisy.failures
    # The rule can be switched off; then only max_regression and the minimums apply.
    off = GateParams(max_regression=0.05, fail_on_significant_regression=False)
    lenient = check_gate(make_metrics(trained_miou=0.29, half_width=0.005), off,
                         baseline="base")
    assert lenient.passed and "not checked" in format_gate_report(lenient)
    # An interval touching 0 is not wholly below it.
    edge = check_gate(make_metrics(trained_miou=0.29, half_width=0.01), gate, baseline="base")
    assert edge.passed, edge.failures


def test_gate_without_intervals_fails_unless_the_rule_is_off() -> None:
    metrics = make_metrics()
    del metrics["intervals"]
    report = check_gate(metrics, GateParams(), baseline="base")
    assert not report.passed
    assert report.failures == [report.failures[0]] and "intervals.delta" in report.failures[0]
    assert check_gate(metrics, GateParams(fail_on_significant_regression=False),
                      baseline="base").passed


def test_gate_min_keys_handle_dotted_metric_and_source_names() -> None:
    assert parse_min_key("temporal_grounding.r@0.5") == [(None, "temporal_grounding", "r@0.5")]
    assert parse_min_key("anet.v1.3.temporal_grounding.r@0.5") == [
        ("anet.v1.3", "temporal_grounding", "r@0.5")]
    metrics = make_metrics()
    # task.metric: every source with the task (charades 0.30 passes, anet 0.18 fails)
    every = check_gate(metrics, GateParams(min={"temporal_grounding.r@0.5": 0.2}),
                       baseline="base")
    assert every.failures == ["anet.v1.3/temporal_grounding r@0.5: trained 0.180 < min 0.200"]
    # source.task.metric: that source only, dotted source and metric names
    one = check_gate(metrics, GateParams(min={"charades_sta_test.temporal_grounding.r@0.5": 0.3,
                                              "anet.v1.3.temporal_grounding.r@0.7": 0.1,
                                              "mcq.accuracy": 0.55}), baseline="base")
    assert one.passed, one.failures
    assert one.checked == 2 * 9 + 3


def test_gate_min_key_matching_nothing_fails_instead_of_passing() -> None:
    for key in ("temporal_grounding.r@0.9", "nosuch.mcq.accuracy", "tracking.ao", "miou"):
        report = check_gate(make_metrics(), GateParams(min={key: 0.0}), baseline="base")
        assert not report.passed, key
        assert report.failures == [report.failures[0]] and "no such metric" in report.failures[0]
        assert key in report.failures[0]


def test_gate_without_baseline_metrics_or_disabled() -> None:
    metrics = make_metrics()
    del metrics["models"]["base"]
    missing = check_gate(metrics, GateParams(), baseline="base")
    assert not missing.passed and "baseline 'base'" in missing.failures[0]
    disabled = check_gate(metrics, GateParams(enabled=False, min={"x.y": 1.0}), baseline="base")
    assert disabled.passed and disabled.checked == 0 and "disabled" in disabled.notes[0]
    assert "disabled" in format_gate_report(disabled)


# ------------------------------------------------------------------------------------ package


def test_package_has_checked_files_card_and_lineage(tmp_path: Path) -> None:
    params = make_project(tmp_path, "model.name_or_path=Qwen/Qwen2.5-VL-7B-Instruct",
                          with_git=True)
    commit = git(tmp_path, "rev-parse", "HEAD")
    manifest = build(tmp_path, params)
    package = tmp_path / params.paths.package
    files = manifest["files"]
    assert set(files) == {
        "model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
        "tokenizer_config.json", "chat_template.jinja", "training_summary.json",
        "README.md", "metrics.json", "lineage.json",
    }  # no training_args.bin (pickle), no hidden file
    for rel, entry in files.items():
        assert sha256_file(package / rel) == entry["sha256"]
        assert (package / rel).stat().st_size == entry["size"]
    assert manifest["version"] == compute_version(files) and len(manifest["version"]) == 12
    assert json.loads((package / "manifest.json").read_text()) == manifest
    generated = ("README.md", "manifest.json", "lineage.json", "metrics.json")
    assert {(package / f).stat().st_mode & 0o777 for f in generated} == {0o644}  # shareable
    assert verify_package(package) == manifest

    card = (package / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "library_name: transformers" in front
    assert "pipeline_tag: video-text-to-text" in front
    assert "base_model: Qwen/Qwen2.5-VL-7B-Instruct" in front
    assert "- grpo" in front and "- videorft" in front
    assert TABLE.strip() in card  # the evaluate stage's table, as is
    assert commit in card and "feedfacefeedfacefeedfacefeedface.dir" in card
    assert "1111aaaa2222bbbb3333cccc4444dddd.dir" in card
    assert "num_generations:" in card and "Publish gate: PASSED" in card

    lineage = json.loads((package / "lineage.json").read_text())
    assert lineage["git"] == {"commit": commit, "dirty": False}
    assert lineage["dvc"]["trained"]["md5"] == "feedfacefeedfacefeedfacefeedface.dir"
    assert lineage["dvc"]["checkpoints"]["stage"] == "train"
    assert lineage["dvc"]["base_model"] is None  # not in this dvc.lock
    assert lineage["videorft"] and lineage["versions"]["python"]
    assert set(manifest) == {"name", "version", "files"}  # no build time: same inputs, same bytes
    assert json.loads((package / "metrics.json").read_text()) == make_metrics()


def test_lineage_outside_git_is_null_and_never_holds_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    params = make_project(tmp_path)
    lineage = collect_lineage(tmp_path, params)
    assert lineage["git"] == {"commit": None, "dirty": None}
    assert HF_SECRET not in json.dumps(lineage)


def test_identical_inputs_give_the_identical_version_and_bytes(tmp_path: Path) -> None:
    """The package folder is a DVC output: two builds from the same inputs, a second apart,
    are the same files byte for byte (no build time anywhere), so DVC gives them one hash."""
    params = make_project(tmp_path)
    first = build(tmp_path, params, tmp_path / "a")
    time.sleep(1.1)  # a later build: any clock reading in a file would differ
    second = build(tmp_path, params, tmp_path / "b")
    assert first["version"] == second["version"] and first["files"] == second["files"]
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    again = build(tmp_path, params, tmp_path / "a")  # rebuilt in place: replaced whole
    assert again["version"] == first["version"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    make_model(tmp_path / params.paths.trained, seed=1)  # other weights
    assert build(tmp_path, params, tmp_path / "c")["version"] != first["version"]


def test_verify_package_detects_tampered_missing_and_extra_files(tmp_path: Path) -> None:
    params = make_project(tmp_path)
    build(tmp_path, params)
    package = tmp_path / params.paths.package
    (package / "config.json").write_text('{"model_type": "evil"}')
    with pytest.raises(PackageIntegrityError, match=r"config\.json: (sha256|size)"):
        verify_package(package)
    build(tmp_path, params)
    (package / "tokenizer.json").unlink()
    (package / "extra.py").write_text("import os")
    with pytest.raises(PackageIntegrityError) as info:
        verify_package(package)
    assert "tokenizer.json: missing" in str(info.value)
    assert "extra.py: not in the manifest" in str(info.value)

    manifest = build(tmp_path, params)  # a forged manifest naming a path outside the package
    forged = dict(manifest, files={**manifest["files"], "../evil.sh": {"sha256": "0", "size": 1}})
    (package / "manifest.json").write_text(json.dumps(forged))
    with pytest.raises(PackageIntegrityError, match=r"bad file name.*escapes"):
        publish_local(package, tmp_path / "registry", manifest["name"], manifest["version"])
    assert not (tmp_path / "registry" / manifest["name"] / "evil.sh").exists()


def test_a_model_folder_without_safetensors_is_refused(tmp_path: Path) -> None:
    params = make_project(tmp_path)
    (tmp_path / params.paths.trained / "model.safetensors").unlink()
    with pytest.raises(StageError, match=r"no \*\.safetensors"):
        build(tmp_path, params)


# ------------------------------------------------------------------------------------ targets


def test_local_registry_publish_twice_is_a_no_op(tmp_path: Path) -> None:
    params = make_project(tmp_path)
    manifest = build(tmp_path, params)
    package, registry = tmp_path / params.paths.package, tmp_path / "registry"
    name, version = manifest["name"], manifest["version"]
    assert publish_local(package, registry, name, version) == "published"
    dest = registry / name / version
    assert verify_package(dest)["version"] == version
    mtimes = {p: p.stat().st_mtime_ns for p in dest.iterdir()}
    assert publish_local(package, registry, name, version) == "already published"
    assert sorted(p.name for p in (registry / name).iterdir()) == sorted(["latest", version])
    assert {p: p.stat().st_mtime_ns for p in dest.iterdir()} == mtimes  # untouched
    assert json.loads((registry / name / "latest").read_text())["version"] == version


def test_local_registry_refuses_a_different_package_under_the_same_version(
    tmp_path: Path,
) -> None:
    params = make_project(tmp_path)
    manifest = build(tmp_path, params)
    package, registry = tmp_path / params.paths.package, tmp_path / "registry"
    dest = registry / manifest["name"] / manifest["version"]
    dest.mkdir(parents=True)
    forged = dict(manifest, files={"x": {"sha256": "0" * 64, "size": 1}})
    (dest / "manifest.json").write_text(json.dumps(forged))
    with pytest.raises(PublishError, match="refusing to overwrite"):
        publish_local(package, registry, manifest["name"], manifest["version"])


def test_s3_publish_verifies_and_is_idempotent(s3_server: S3Server, tmp_path: Path) -> None:
    params = make_project(tmp_path)
    manifest = build(tmp_path, params)
    package = tmp_path / params.paths.package
    name, version = manifest["name"], manifest["version"]
    s3_server.create_bucket("models")
    uri = "s3://models/registry/"
    assert publish_s3(package, uri, name, version,
                      endpoint_url=s3_server.endpoint_url) == "published"
    fs = s3_server.filesystem()
    remote = f"models/registry/{name}/{version}"
    assert verify_package(remote, fs=fs) == manifest  # read back through s3fs, every sha256
    assert verify_package(f"s3://{remote}", fs=fs)["version"] == version
    latest = json.loads(fs.cat_file(f"models/registry/{name}/latest"))
    assert latest["version"] == version
    def stamps() -> dict[str, Any]:
        return {p: i["LastModified"] for p, i in fs.find(remote, detail=True).items()}

    before = stamps()
    assert publish_s3(package, uri, name, version,
                      endpoint_url=s3_server.endpoint_url) == "already published"
    assert stamps() == before


def test_s3_publish_to_a_missing_bucket_is_not_transient(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """No such bucket fails the same way next time: a PublishError that says so (exit 1, no
    Prefect retry), naming the target; nothing is written anywhere."""
    params = make_project(tmp_path)
    manifest = build(tmp_path, params)
    with pytest.raises(PublishError, match=r"s3://no-such-bucket/reg.*upload failed") as info:
        publish_s3(tmp_path / params.paths.package, "s3://no-such-bucket/reg", manifest["name"],
                   manifest["version"], endpoint_url=s3_server.endpoint_url)
    assert info.value.transient is False
    assert not s3_server.filesystem().exists("no-such-bucket")


def test_s3_interrupted_upload_is_not_published_and_a_retry_completes(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = make_project(tmp_path)
    manifest = build(tmp_path, params)
    package = tmp_path / params.paths.package
    name, version = manifest["name"], manifest["version"]
    s3_server.create_bucket("models")
    real_filesystem = targets_mod.s3_filesystem

    def dying_filesystem(endpoint_url: str | None = None) -> Any:
        fs = real_filesystem(endpoint_url)
        real_put = fs.put_file

        def put_file(local: str, remote: str, **kwargs: Any) -> None:
            if remote.endswith("model.safetensors"):
                raise ConnectionResetError("connection reset by peer")
            real_put(local, remote, **kwargs)

        fs.put_file = put_file
        return fs

    monkeypatch.setattr(targets_mod, "s3_filesystem", dying_filesystem)
    target = PublishTarget(type="s3", uri="s3://models/reg", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(PublishError, match=r"ConnectionResetError.*not published"):
        publish(package, [target], name=name, version=version, root=tmp_path)
    fs = s3_server.filesystem()
    remote = f"models/reg/{name}/{version}"
    uploaded = {p.rsplit("/", 1)[1] for p in fs.find(remote)}
    assert "config.json" in uploaded  # a partial upload is there ...
    assert "manifest.json" not in uploaded  # ... but never marked complete
    assert not fs.exists(f"models/reg/{name}/latest")
    with pytest.raises(PackageIntegrityError, match="no manifest"):
        verify_package(remote, fs=fs)  # a reader sees it as not published

    monkeypatch.setattr(targets_mod, "s3_filesystem", real_filesystem)
    results = publish(package, [target], name=name, version=version, root=tmp_path)
    assert results == [{"type": "s3", "uri": "s3://models/reg", "status": "published",
                        "location": f"s3://{remote}"}]
    assert verify_package(remote, fs=s3_server.filesystem()) == manifest


class FakeHfApi:
    """A recording stand-in for huggingface_hub.HfApi (the Hub is unreachable offline)."""

    instances: list[FakeHfApi] = []  # noqa: RUF012 - a test recorder
    tags: set[str] = set()  # noqa: RUF012

    def __init__(self, token: str | None = None, **_: Any) -> None:
        self.token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        FakeHfApi.instances.append(self)

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def list_repo_refs(self, repo_id: str, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("list_repo_refs", {"repo_id": repo_id, **kwargs}))
        return SimpleNamespace(tags=[SimpleNamespace(name=t) for t in sorted(self.tags)])

    def upload_folder(self, **kwargs: Any) -> SimpleNamespace:
        files = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        self.calls.append(("upload_folder", {**kwargs, "files_seen": files}))
        return SimpleNamespace(oid="c0ffee")

    def create_tag(self, repo_id: str, **kwargs: Any) -> None:
        self.calls.append(("create_tag", {"repo_id": repo_id, **kwargs}))
        FakeHfApi.tags.add(kwargs["tag"])


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> type[FakeHfApi]:
    import huggingface_hub

    FakeHfApi.instances, FakeHfApi.tags = [], set()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi


def test_hub_stand_in_gets_one_commit_and_a_version_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: type[FakeHfApi]
) -> None:
    """Only a stand-in: checks the calls we make, not the Hub's behaviour."""
    params = make_project(tmp_path)
    manifest = build(tmp_path, params)
    package = tmp_path / params.paths.package
    monkeypatch.setenv("MY_HF_TOKEN", HF_SECRET)
    assert publish_hub(package, "me/model", private=True, token_env="MY_HF_TOKEN") == "published"
    api = fake_hub.instances[-1]
    assert api.token == HF_SECRET
    names = [name for name, _ in api.calls]
    assert names == ["create_repo", "list_repo_refs", "upload_folder", "create_tag"]
    create, _, upload, tag = (kwargs for _, kwargs in api.calls)
    assert create["private"] is True and create["exist_ok"] is True
    assert upload["repo_id"] == "me/model" and upload["folder_path"] == str(package)
    assert set(upload["allow_patterns"]) == {*manifest["files"], "manifest.json"}
    assert tag == {"repo_id": "me/model", "tag": manifest["version"], "revision": "c0ffee",
                   "repo_type": "model", "tag_message": f"{manifest['name']} "
                   f"{manifest['version']}", "exist_ok": True}
    # the tag exists now: a second publish uploads nothing
    assert publish_hub(package, "me/model", private=True,
                       token_env="MY_HF_TOKEN") == "already published"
    assert "upload_folder" not in [name for name, _ in fake_hub.instances[-1].calls]


def test_hub_without_the_token_variable_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: type[FakeHfApi]
) -> None:
    params = make_project(tmp_path)
    build(tmp_path, params)
    monkeypatch.delenv("MY_HF_TOKEN", raising=False)
    with pytest.raises(PublishError, match="environment variable MY_HF_TOKEN is not set"):
        publish_hub(tmp_path / params.paths.package, "me/model", private=True,
                    token_env="MY_HF_TOKEN")
    assert fake_hub.instances == []  # nothing was attempted


# -------------------------------------------------------------------------------------- stage


def test_stage_publishes_everywhere_and_no_secret_leaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    s3_server: S3Server, fake_hub: type[FakeHfApi],
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)  # moto accepts any key
    s3_server.create_bucket("models")
    params = make_project(
        tmp_path,
        "publish.targets=[{type: local, uri: registry}, "
        f"{{type: s3, uri: 's3://models/p', endpoint_url: '{s3_server.endpoint_url}'}}, "
        "{type: hub, uri: me/videorft-tiny}]",
    )
    caplog.set_level(logging.DEBUG)
    summary = run_publish(params, tmp_path)
    version = summary["version"]
    assert summary["published"] is True and summary["gate"]["passed"] is True
    assert [t["status"] for t in summary["targets"]] == ["published"] * 3
    # Relative to the project, as written in params: no machine's absolute paths in reports.
    assert summary["targets"][0]["location"] == f"registry/{params.publish.name}/{version}"
    assert (tmp_path / summary["targets"][0]["location"] / "manifest.json").is_file()
    assert fake_hub.instances[-1].token == HF_SECRET  # the token was used ...
    reports = tmp_path / params.paths.reports
    assert json.loads((reports / "publish.json").read_text()) == summary
    assert "Publish gate: PASSED" in (reports / "gate.md").read_text()

    # ... and appears nowhere: not in logs, the package, the registry or the reports
    logged = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert caplog.records
    written = [p for p in tmp_path.rglob("*") if p.is_file()
               and "models/trained" not in p.as_posix()]
    assert any(p.name == "lineage.json" for p in written)
    for secret in (HF_SECRET, AWS_SECRET):
        assert secret not in logged
        assert secret not in json.dumps(summary)
        for path in written:
            assert secret.encode() not in path.read_bytes(), path
    fs = s3_server.filesystem()
    for path in fs.find("models/p"):
        assert HF_SECRET.encode() not in fs.cat_file(path)

    again = run_publish(params, tmp_path)  # same content: same version, nothing re-uploaded
    assert again["version"] == version
    assert [t["status"] for t in again["targets"]] == ["already published"] * 3


def test_stage_gate_failure_publishes_nothing(tmp_path: Path) -> None:
    params = make_project(tmp_path, "publish.gate.min={temporal_grounding.miou: 1.01}")
    with pytest.raises(GateFailedError) as info:
        run_publish(params, tmp_path)
    message = str(info.value)
    assert "publish gate failed" in message
    assert "charades_sta_test/temporal_grounding miou: trained 0.320 < min 1.010" in message
    assert isinstance(info.value, StageError)
    assert not (tmp_path / "registry").exists()
    assert not (tmp_path / params.paths.package).exists()
    report = json.loads((tmp_path / params.paths.reports / "publish.json").read_text())
    assert report["published"] is False and report["gate"]["passed"] is False
    assert "FAILED" in (tmp_path / params.paths.reports / "gate.md").read_text()
    assert info.value.summary == report  # the verdict travels with the error

    # `videorft stage publish` (what dvc.yaml runs) prints the verdict as its summary line,
    # which the runner hands to the orchestrator in the StageError, then fails with exit 1.
    from typer.testing import CliRunner

    from videorft.cli import app
    from videorft.pipeline.runner import SUMMARY_PREFIX

    result = CliRunner().invoke(app, ["stage", "publish", "--root", str(tmp_path)])
    assert result.exit_code == 1
    line = next(x for x in result.stdout.splitlines() if x.startswith(SUMMARY_PREFIX))
    assert json.loads(line[len(SUMMARY_PREFIX):]) == report


def test_stage_disabled_or_without_evaluation(tmp_path: Path) -> None:
    params = make_project(tmp_path, "publish.enabled=false")
    assert run_publish(params, tmp_path) == {"enabled": False}
    assert json.loads((tmp_path / params.paths.reports / "publish.json").read_text()) == {
        "enabled": False}
    params = project_params(tmp_path)
    (tmp_path / params.paths.evaluation / "metrics.json").unlink()
    with pytest.raises(StageError, match="run the evaluate stage first"):
        run_publish(params, tmp_path)
