"""Running one stage (training) in another checkout, on another machine, and taking the result
back: what travels, and how the pipeline's checkout is made consistent again.

The contract (docs/gpu-workers.md tells it to operators):

- pipeline -> worker, as flow parameters: the text of params.yaml and of dvc.lock. The worker's
  checkout holds the same code (same git commit): DVC hashes the code a stage depends on, and
  the pipeline refuses a result whose code hashes differ from its own.
- data in: the stage's data dependencies (outputs of upstream stages) go through the DVC remote
  (``orchestration.remote``): the pipeline pushes them (``send_inputs``), the worker pulls
  exactly those paths (``prepare_worker``), not the whole upstream DAG (raw videos stay put).
- data out: the worker pushes the stage's cached outputs to the remote and writes a *handoff
  record* ``<remote>/videorft-runs/<stage>/<flow run id>.json``: the stage's dvc.lock entry,
  its ``cache: false`` outputs, and the run's outcome (``finish_worker``). The pipeline writes
  that entry into its own dvc.lock and those files into place, pulls the cached outputs, and
  checks that ``dvc status STAGE`` is clean (``take_back``).
- ``cache: false`` outputs: this project's dvc.yaml has none (every output, metrics and plots
  included, is DVC-cached and comes back by ``dvc pull``), so its records carry no files. The
  handling is kept for a user's own dvc.yaml that marks an output ``cache: false``: DVC keeps
  such an output out of remotes, so the record is its only way back.
- without a remote, nothing can travel: the worker must share the pipeline's checkout (a worker
  on the same machine); the record then lies in ``.dvc/tmp/videorft-runs/`` of that checkout,
  and a worker elsewhere is reported as such.

No Prefect here: flows/train.py and tasks/stages.py call these functions.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from videorft.errors import StageError
from videorft.io import atomic_write_bytes, atomic_write_text, replace_dir, safe_join
from videorft.pipeline import remote as rem
from videorft.pipeline.command import Log, checkout_lock, dvc
from videorft.pipeline.lockfile import locked_entry, read_lock, write_lock
from videorft.pipeline.status import stage_status

RECORDS = "videorft-runs"  # folder of handoff records, in the remote (or .dvc/tmp without one)


def _stage_io(root: Path, stage: str) -> tuple[list[str], list[str], list[str]]:
    """(upstream stages producing the stage's data deps, those deps' paths, the stage's
    `cache: false` outputs: none with this project's dvc.yaml), all read from dvc.yaml's
    graph."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        # By name: `addressing` is relative to the current directory, which need not be root.
        by_name = {node.name: node for node in graph.nodes}
        if stage not in by_name:
            raise StageError(f"{root / 'dvc.yaml'} has no stage {stage!r}")
        node = by_name[stage]
        producers: list[str] = []
        data_deps: list[str] = []
        for dep in node.deps:
            dep_path = Path(dep.fs_path)
            for upstream in graph.successors(node):
                if any(
                    out.use_cache and (dep_path == Path(out.fs_path)
                                       or Path(out.fs_path) in dep_path.parents)
                    for out in upstream.outs
                ):
                    data_deps.append(dep.def_path)
                    if upstream.name not in producers:
                        producers.append(upstream.name)
        uncached = [out.def_path for out in node.outs if not out.use_cache]
    return producers, data_deps, uncached


def _remote(root: Path, log: Log | None) -> str | None:
    """Configure the checkout's DVC remote from its params.yaml; its url (None: no remote)."""
    return rem.configure_remote(root, rem.remote_settings(root), log=log)


def _record_location(root: Path, url: str | None, stage: str, run_id: str) -> str:
    base = url if url is not None else str(root / ".dvc" / "tmp")
    return f"{base.rstrip('/')}/{RECORDS}/{stage}/{run_id}.json"


def _filesystem(root: Path, location: str) -> Any:
    """fsspec filesystem and path for a record location (a folder or s3://); the S3 endpoint
    is the remote's, credentials come from the AWS environment, as for DVC itself."""
    from fsspec.core import url_to_fs

    options: dict[str, Any] = {}
    settings = rem.remote_settings(root)
    if location.startswith("s3://") and settings is not None and settings.endpoint_url:
        options["client_kwargs"] = {"endpoint_url": settings.endpoint_url}
    return url_to_fs(location, **options)


# ------------------------------------------------------------------------------ pipeline side


def send_inputs(root: Path, stage: str, *, log: Log | None = None) -> str | None:
    """Before submitting `stage` elsewhere: make sure the remote holds its data deps (each
    producing stage's outputs, pushed unless this checkout already pushed them there).
    Returns the remote url (None: no remote, so the worker must share this checkout)."""
    root = Path(root)
    url = _remote(root, log)
    if url is None:
        return None
    producers, _, _ = _stage_io(root, stage)
    for upstream in producers:
        entry = locked_entry(root, upstream)
        if not entry:
            raise StageError(
                f"stage {stage!r} cannot be sent to a worker: upstream stage {upstream!r} has "
                f"never run in {root} (run the pipeline, not the stage alone)"
            )
        if not rem.in_remote(root, url, upstream, entry):
            rem.push_stage(root, upstream, url, log=log)
            rem.mark_in_remote(root, url, upstream, entry)
    return url


def take_back(
    root: Path, stage: str, url: str | None, run_id: str, *, where: str, log: Log | None = None
) -> dict[str, Any]:
    """After the worker finished `stage` (flow run `run_id`, described by `where`): write its
    dvc.lock entry and `cache: false` outputs (if its dvc.yaml has any) here, pull its cached
    outputs from the remote, and check that DVC sees the stage as up to date. Returns the
    worker's stage outcome."""
    root = Path(root)
    location = _record_location(root, url, stage, run_id)
    fs, path = _filesystem(root, location)
    if not fs.exists(path):
        if url is None:
            raise StageError(
                f"stage {stage!r} ran on {where}, but its handoff record is not in this "
                f"checkout ({location}): the worker used another checkout, and without a DVC "
                "remote (params.yaml: orchestration.remote.url) its outputs cannot come here. "
                "Set a remote both sides can reach (docs/gpu-workers.md)"
            )
        raise StageError(
            f"stage {stage!r} ran on {where}, but its handoff record {location} is missing: "
            "does the worker use the same remote (orchestration.remote in the params it got)?"
        )
    record = json.loads(fs.cat_file(path))
    if record.get("stage") != stage or not record.get("lock"):
        raise StageError(f"handoff record {location} is not a {stage!r} record with a dvc.lock "
                         "entry: was it written by this version of flows/train.py?")
    entry = record["lock"]
    with checkout_lock(root):
        lock = read_lock(root, roundtrip=True)
        stages = lock["stages"]
        if stages.get(stage) != entry:
            stages[stage] = entry
            write_lock(root, lock)
        for rel, content in record["files"].items():
            _put_output(root, rel, content)
    if url is not None:
        code, lines = dvc(["pull", "--force", "--remote", rem.REMOTE, stage], root, log=log)
        if code != 0:
            raise StageError(
                f"stage {stage!r} ran on {where}, but pulling its outputs from DVC remote "
                f"{url} failed (dvc pull exit {code}):\n" + "\n".join(lines[-15:])
            )
        rem.mark_in_remote(root, url, stage, entry)
    left = stage_status(root, stage)
    if left:
        raise StageError(
            f"stage {stage!r} ran on {where}, but this checkout ({root}) still sees it as "
            f"changed: {'; '.join(left)}. A changed code dependency means the worker's "
            "checkout is not at this checkout's commit: deploy the same code to the worker"
        )
    return record["outcome"]


def _put_output(root: Path, rel: str, content: Any) -> None:
    """Write one `cache: false` output from a record: a file (base64) or a folder ({name:
    base64}, replaced whole so no stale file stays in it). Paths come from the remote: one
    that leaves the checkout is refused."""
    target = safe_join(root, rel, file="handoff record")
    if isinstance(content, str):
        data = base64.b64decode(content)
        if target.is_file() and target.read_bytes() == data:
            return
        if target.is_dir():
            shutil.rmtree(target)
        atomic_write_bytes(target, data)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, encoded in content.items():
            path = safe_join(staging, name, file="handoff record")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(encoded))
        if target.is_file():
            target.unlink()
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -------------------------------------------------------------------------------- worker side


def prepare_worker(
    root: Path,
    *,
    params_yaml: str | None,
    dvc_lock: str | None,
    stage: str = "train",
    log: Log | None = None,
) -> str | None:
    """In the worker's checkout: take the pipeline's params.yaml and dvc.lock, configure the
    remote they name, and pull the stage's data deps. Returns the remote url (None: none)."""
    root = Path(root)
    if not (root / "dvc.yaml").is_file():
        raise StageError(
            f"the worker's checkout {root} has no dvc.yaml: point the deployment's pull step "
            "(prefect.yaml, VIDEORFT_CHECKOUT) at a checkout of the project"
        )
    with checkout_lock(root):
        for name, text in (("params.yaml", params_yaml), ("dvc.lock", dvc_lock)):
            path = root / name
            if text is not None and (not path.exists() or path.read_text("utf-8") != text):
                atomic_write_text(path, text)
    url = _remote(root, log)
    _, data_deps, _ = _stage_io(root, stage)
    if url is None:
        missing = [dep for dep in data_deps if not (root / dep).exists()]
        if missing:
            raise StageError(
                f"stage {stage!r}: its inputs {', '.join(missing)} are not in the worker's "
                f"checkout {root}, and no DVC remote is set (params.yaml: "
                "orchestration.remote.url) to pull them from: a worker in another checkout "
                "than the pipeline's needs a remote both reach (docs/gpu-workers.md)"
            )
        return None
    if data_deps:
        if log is not None:
            log(f"{stage}: pulling its inputs from DVC remote {url}: {', '.join(data_deps)}")
        code, lines = dvc(["pull", "--force", "--remote", rem.REMOTE, *data_deps], root, log=log)
        if code != 0:
            raise StageError(
                f"stage {stage!r}: pulling its inputs ({', '.join(data_deps)}) from DVC remote "
                f"{url} into {root} failed (dvc pull exit {code}); the pipeline pushes them "
                "before submitting, so is this the pipeline's remote?\n" + "\n".join(lines[-15:])
            )
    return url


def finish_worker(
    root: Path, stage: str, url: str | None, run_id: str, outcome: dict[str, Any],
    *, log: Log | None = None,
) -> dict[str, Any]:
    """In the worker's checkout, after the stage: push its outputs (if not there yet) and
    write the handoff record the pipeline takes back. Returns the record without the files."""
    root = Path(root)
    entry = locked_entry(root, stage)
    if not entry:
        raise StageError(f"stage {stage!r} has no dvc.lock entry in {root} after running")
    if url is not None and not rem.in_remote(root, url, stage, entry):
        rem.push_stage(root, stage, url, log=log)
        rem.mark_in_remote(root, url, stage, entry)
    _, _, uncached = _stage_io(root, stage)
    files: dict[str, Any] = {}
    for rel in uncached:
        path = root / rel
        if path.is_file():
            files[rel] = base64.b64encode(path.read_bytes()).decode("ascii")
        elif path.is_dir():
            files[rel] = {
                f.relative_to(path).as_posix(): base64.b64encode(f.read_bytes()).decode("ascii")
                for f in sorted(path.rglob("*")) if f.is_file()
            }
    record = {"stage": stage, "run_id": run_id, "lock": entry, "files": files,
              "outcome": outcome}
    location = _record_location(root, url, stage, run_id)
    text = json.dumps(record, sort_keys=True)
    if "://" in location:
        fs, path = _filesystem(root, location)
        fs.pipe_file(path, text.encode("utf-8"))
    else:
        atomic_write_text(location, text)
    if log is not None:
        log(f"{stage}: handoff record written to {location}")
    return {key: value for key, value in record.items() if key != "files"} | {
        "record": location}
