"""The DVC remote on a real S3 server (moto, 127.0.0.1): a run pushes each stage's outputs, and
a fresh clone of the project with an empty DVC cache pulls them instead of recomputing.

Only the three data stages run (through `repro_stage`, the path `videorft run` takes) on a small
synthetic dataset; the project's dvc.yaml is trimmed to them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.conftest import DATA_STAGES, TEST_PRESET, copy_params, record_dvc_calls
from tests.test_pipeline_e2e import SMALL
from videorft.errors import ConfigError, StageError
from videorft.params import RemoteParams, update_params
from videorft.pipeline import remote as remote_mod
from videorft.pipeline.lockfile import locked_stages
from videorft.pipeline.remote import configure_remote, pullable, remote_url
from videorft.pipeline.runner import repro_stage

ROOT = Path(__file__).resolve().parents[1]
SECRET = "remoteSECRETawsKey0123456789"


def _make_project(proj: Path) -> Path:
    """A checkout-like copy with dvc.yaml trimmed to the data stages, where the metrics of
    extract_frames and build_dataset are cached outs (the dvc.yaml change that lets them travel
    through the remote) and download's rejects.json stays `cache: false` (it travels by git)."""
    proj.mkdir()
    copy_params(proj)
    for name in (".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, proj / name)
    yaml = YAML()
    spec = yaml.load((ROOT / "dvc.yaml").read_text())
    spec.pop("artifacts", None)
    for name in list(spec["stages"]):
        if name not in DATA_STAGES:
            del spec["stages"][name]
    # Set both ways here, whichever the repository's dvc.yaml chooses.
    for name in ("extract_frames", "build_dataset"):
        spec["stages"][name]["metrics"] = [
            next(iter(m)) if isinstance(m, dict) else m for m in spec["stages"][name]["metrics"]
        ]
    outs = spec["stages"]["download"]["outs"]
    rejects = "${paths.reports}/rejects.json"
    outs[:] = [o for o in outs if (next(iter(o)) if isinstance(o, dict) else o) != rejects]
    outs.append({rejects: {"cache": False}})
    with (proj / "dvc.yaml").open("w") as handle:
        yaml.dump(spec, handle)
    (proj / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    shutil.copytree(
        ROOT / "videorft", proj / "videorft", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    update_params(proj / "params.yaml", preset=TEST_PRESET, overrides=SMALL)
    return proj


def _clone(source: Path, dest: Path) -> Path:
    """What `git clone` of `source` would hold had all it tracks been committed: the files git
    does not ignore (dvc.lock, params, code, `cache: false` reports), no data, no DVC cache."""
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard", "-z"],
        cwd=source, check=True, capture_output=True, text=True,
    ).stdout.split("\0")
    for rel in filter(None, listed):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _set_remote(proj: Path, url: str | None, endpoint: str | None) -> None:
    update_params(proj / "params.yaml", overrides=[
        f"orchestration.remote.url={url or 'null'}",
        f"orchestration.remote.endpoint_url={endpoint or 'null'}",
    ])


def _outputs(proj: Path) -> dict[str, bytes]:
    """Every file under data/ and reports/ (what the stages wrote), by relative path."""
    return {
        str(p.relative_to(proj)): p.read_bytes()
        for folder in ("data", "reports")
        for p in sorted((proj / folder).rglob("*"))
        if p.is_file()
    }


def _files_holding(folder: Path, secret: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]


def _remote_keys(s3_server, prefix: str) -> set[str]:
    return {key.split(f"{prefix}/files/md5/", 1)[1].replace("/", "")
            for key in s3_server.filesystem().find(prefix)}


def _locked_outs(proj: Path) -> dict[str, str]:
    return {out["path"]: out["md5"] for stage in locked_stages(proj).values()
            for out in stage["outs"]}


@pytest.mark.e2e
def test_other_machine_pulls_instead_of_recomputing(
    tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto takes any key; none may leak
    calls = record_dvc_calls(monkeypatch, remote_mod)
    url = "s3://store/dvc"
    a = _make_project(tmp_path / "a")
    _set_remote(a, url, s3_server.endpoint_url)

    # Machine A. The bucket does not exist yet: the stage runs, then its push fails loudly.
    failed = r"(?s)DVC remote 'videorft' \(s3://store/dvc\) failed.*fine locally"
    with pytest.raises(StageError, match=failed):
        repro_stage(a, "download")
    assert "data/raw" in _locked_outs(a)  # it ran and is recorded: only the push failed

    # Fixed: the stage whose push failed is pushed now; the others run, then push.
    s3_server.create_bucket("store")
    calls.clear()
    log_a: list[str] = []
    for stage in DATA_STAGES:
        outcome = repro_stage(a, stage, log=log_a.append)
        assert outcome.ran is (stage != "download") and not outcome.pulled, outcome
    assert [c[:2] for c in calls] == [["push", "--remote"]] * 3, calls  # configured once
    in_remote = _remote_keys(s3_server, "store/dvc")
    outs = _locked_outs(a)
    for path in ("data/raw", "data/records.jsonl", "data/frames", "data/dataset",
                 "reports/frames.json", "reports/dataset.json"):
        assert outs[path] in in_remote, path  # persisted outputs travel too
    produced = _outputs(a)

    # Machine B: a clone (dvc.lock, params, code, git-tracked reports), empty cache, no data.
    b = _clone(a, tmp_path / "b")
    assert not (b / "data").exists() and not (b / ".dvc" / "cache").exists()
    assert not (b / ".dvc" / "config.local").exists()
    assert (b / "reports/rejects.json").is_file() and not (b / "reports/frames.json").exists()
    log_b: list[str] = []
    for stage in DATA_STAGES:
        outcome = repro_stage(b, stage, log=log_b.append)
        assert not outcome.ran and outcome.pulled, outcome
        assert outcome.reasons == [f"pulled from remote {url}"]
    assert not any("pushing" in line for line in log_b), log_b  # it came from there
    assert _outputs(b) == produced

    # A `cache: false` output the clone lacks cannot be pulled: the stage runs after the pull.
    (b / "reports/rejects.json").unlink()
    shutil.rmtree(b / "data/raw")
    outcome = repro_stage(b, "download")
    assert outcome.ran and not outcome.pulled
    assert any("reports/rejects.json" in r for r in outcome.reasons), outcome.reasons
    assert any("still changed" in r for r in outcome.reasons), outcome.reasons
    assert _outputs(b) == produced  # deterministic stage: same bytes again

    # A changed param: the remote's outputs are stale, so the stage runs instead of pulling.
    update_params(b / "params.yaml", overrides=["build_dataset.val_fraction=0.5"])
    shutil.rmtree(b / "data/dataset")
    log_b.clear()
    outcome = repro_stage(b, "build_dataset", log=log_b.append)
    assert outcome.ran and not outcome.pulled
    assert any("build_dataset.val_fraction" in r for r in outcome.reasons), outcome.reasons
    assert not any("pulling its outputs" in line for line in log_b), log_b
    assert any("pushing its outputs" in line for line in log_b), log_b
    assert (b / "data/dataset/val.jsonl").read_bytes() != produced["data/dataset/val.jsonl"]
    assert _locked_outs(b)["data/dataset"] in _remote_keys(s3_server, "store/dvc")

    config = b / ".dvc" / "config.local"
    assert url in config.read_text() and s3_server.endpoint_url in config.read_text()

    # Remote unset in params: it leaves .dvc/config.local, and nothing is pushed or pulled.
    _set_remote(b, None, None)
    update_params(b / "params.yaml", overrides=["build_dataset.val_fraction=0.4"])
    calls.clear()
    log_b.clear()
    assert repro_stage(b, "build_dataset", log=log_b.append).ran
    assert calls == [["remote", "remove", "--local", "videorft"]], calls
    assert not any("DVC remote" in line for line in log_b), log_b
    assert "videorft" not in config.read_text()
    assert _locked_outs(b)["data/dataset"] not in _remote_keys(s3_server, "store/dvc")

    for proj in (a, b):  # credentials stay in the environment
        assert not _files_holding(proj, SECRET.encode())


def test_configure_remote_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = tmp_path / "p"
    (proj / ".dvc").mkdir(parents=True)
    shutil.copy(ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    calls = record_dvc_calls(monkeypatch, remote_mod)
    config = proj / ".dvc" / "config.local"
    s3 = RemoteParams(url="s3://bucket/prefix/", endpoint_url="http://127.0.0.1:9")

    assert configure_remote(proj, s3) == "s3://bucket/prefix"
    text = config.read_text()
    assert "url = s3://bucket/prefix" in text and "endpointurl = http://127.0.0.1:9" in text
    assert "remote = videorft" in text  # the default remote: a plain `dvc pull` uses it too
    assert len(calls) == 2
    assert configure_remote(proj, s3) == "s3://bucket/prefix"
    assert len(calls) == 2 and config.read_text() == text  # already so: no DVC call
    # The endpoint dropped from params leaves the config too.
    assert configure_remote(proj, RemoteParams(url="s3://bucket/prefix")) == "s3://bucket/prefix"
    assert "endpointurl" not in config.read_text() and len(calls) == 3


def test_remote_url() -> None:
    root = Path("/work/proj")
    assert remote_url(root, RemoteParams(url="s3://bucket/prefix/")) == "s3://bucket/prefix"
    assert remote_url(root, RemoteParams(url="store")) == str(Path("/work/proj/store").resolve())
    assert remote_url(root, RemoteParams(url="/mnt/dvc")) == "/mnt/dvc"
    with pytest.raises(ConfigError, match=r"orchestration\.remote\.url"):
        remote_url(root, RemoteParams(url=" "))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ([{"changed outs": {"data/raw": "not in cache", "data/records.jsonl": "deleted"}}], True),
        ([], False),  # up to date: nothing to pull
        ([{"changed outs": {"data/frames": "modified"}}], False),  # e.g. a resumable partial
        ([{"changed deps": {"params.yaml": {"download": "modified"}}},
          {"changed outs": {"data/raw": "deleted"}}], False),  # stale in the remote
        (["changed command"], False),
    ],
)
def test_pullable_only_when_outputs_are_just_missing(status: list, expected: bool) -> None:
    assert pullable(status) is expected
