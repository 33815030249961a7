"""Publish a built package to a local registry folder, S3 (or compatible) or the HF Hub.

Every target stores a package as ``<name>/<version>`` (the Hub: a tag named ``version``) and
records ``<name>/latest``. Publishing is idempotent: the version is a content hash, so a version
already there with the same manifest is left alone ("already published"), and a different
package under the same version is refused rather than overwritten.

Completeness: a local version appears by one rename; an S3 version is complete when its
``manifest.json`` exists, which is uploaded last, after every other file was read back and
checked (a reader treats a version without manifest as not published); a Hub version is one
commit, then tagged. Credentials come from the environment only (AWS variables or profile for
S3, the variable named by ``token_env`` for the Hub) and are never logged or written.
Retries for transient errors belong to the orchestration layer; these functions can simply be
called again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from videorft.errors import StageError, is_network_error
from videorft.io import atomic_write_json, replace_dir
from videorft.params import PublishTarget
from videorft.publish.package import (
    MANIFEST,
    PackageIntegrityError,
    read_manifest,
    readable,
    same_package,
    size_and_sha256_fs,
    verify_package,
)

log = logging.getLogger(__name__)

PUBLISHED = "published"
ALREADY = "already published"
LATEST = "latest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class PublishError(StageError):
    """A target refused or failed the upload (the message names the target, never a secret)."""


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value) or ".." in value:
        raise PublishError(f"{what} {value!r}: use letters, digits, '.', '_' and '-' only")
    return value


def _our_manifest(package: Path, name: str, version: str) -> dict[str, Any]:
    manifest = read_manifest(package)
    if manifest.get("version") != version or manifest.get("name") != name:
        raise PublishError(
            f"{package}: the package is {manifest.get('name')!r} version "
            f"{manifest.get('version')!r}, not {name!r} version {version!r}"
        )
    return manifest


def _latest(name: str, version: str) -> dict[str, str]:
    return {"name": name, "version": version, "manifest": f"{version}/{MANIFEST}"}


# --------------------------------------------------------------------------- local registry


def publish_local(package: Path, registry: Path, name: str, version: str) -> str:
    """Copy the package to ``<registry>/<name>/<version>/`` (temp folder + rename), then point
    ``<registry>/<name>/latest`` at it. Returns "published" or "already published"."""
    package, registry = Path(package), Path(registry)
    _check_name(name, "package name")
    _check_name(version, "version")
    ours = _our_manifest(package, name, version)
    parent = registry / name
    dest = parent / version
    status = PUBLISHED
    if dest.exists():
        try:
            theirs: dict[str, Any] | None = read_manifest(dest)
        except PackageIntegrityError:
            theirs = None  # not a finished package (a hand-made folder): replaced below
        if same_package(ours, theirs):
            status = ALREADY
        elif theirs is not None:
            raise PublishError(
                f"{dest}: a different package is already published as {name} {version}; "
                "refusing to overwrite it"
            )
    if status == PUBLISHED:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=parent))
        try:
            tmp.chmod(0o755)
            for rel in sorted(ours["files"]):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(package / rel, tmp / rel)
            shutil.copyfile(package / MANIFEST, tmp / MANIFEST)  # last
            verify_package(tmp)  # the copy, byte for byte, before it becomes visible
            replace_dir(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    latest = parent / LATEST
    wanted = _latest(name, version)
    try:
        current = json.loads(latest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current != wanted:
        atomic_write_json(latest, wanted)
        readable(latest)
    log.info("publish local: %s %s %s (%s)", name, version, status, dest)
    return status


# --------------------------------------------------------------------------- S3


def parse_s3_uri(uri: str) -> str:
    """``s3://bucket/prefix/`` -> ``bucket/prefix`` (the form s3fs paths take)."""
    if not uri.startswith("s3://") or not uri[5:].strip("/"):
        raise PublishError(f"s3 target {uri!r}: expected s3://bucket[/prefix]")
    return uri[5:].strip("/")


def s3_filesystem(endpoint_url: str | None = None) -> Any:
    """A fresh s3fs filesystem, credentials from the environment (no caches: each publish
    sees the bucket as it is now)."""
    import s3fs

    return s3fs.S3FileSystem(
        endpoint_url=endpoint_url, skip_instance_cache=True, use_listings_cache=False
    )


def _remote_manifest(fs: Any, dest: str) -> dict[str, Any] | None:
    """The published manifest at ``dest``; None when absent (or unreadable: not complete)."""
    try:
        return read_manifest(dest, fs)
    except PackageIntegrityError:
        return None


def publish_s3(
    package: Path, uri: str, name: str, version: str, *, endpoint_url: str | None = None,
) -> str:
    """Upload the package to ``<uri>/<name>/<version>/``: every file, then a read-back check,
    then ``manifest.json`` last; then ``<uri>/<name>/latest``. Returns the status."""
    package = Path(package)
    _check_name(name, "package name")
    _check_name(version, "version")
    base = parse_s3_uri(uri)
    ours = _our_manifest(package, name, version)
    fs = s3_filesystem(endpoint_url)
    dest = f"{base}/{name}/{version}"
    where = f"s3://{dest}"
    try:
        theirs = _remote_manifest(fs, dest)
        if theirs is not None and not same_package(ours, theirs):
            raise PublishError(f"{where}: a different package is already published as {name} "
                               f"{version}; refusing to overwrite it")
        status = ALREADY if theirs is not None else PUBLISHED
        if status == PUBLISHED:
            if fs.exists(dest):  # files of an upload that died before its manifest
                log.warning("publish s3: %s has no manifest (an interrupted upload); "
                            "uploading it again", where)
                fs.rm(dest, recursive=True)
            for rel in sorted(ours["files"]):
                fs.put_file(str(package / rel), f"{dest}/{rel}")
            problems = []
            for rel, entry in sorted(ours["files"].items()):
                if size_and_sha256_fs(fs, f"{dest}/{rel}") != (entry["size"], entry["sha256"]):
                    problems.append(rel)
            if problems:
                raise PackageIntegrityError(
                    f"{where}: uploaded files differ when read back: {', '.join(problems)}; "
                    "no manifest written, the version is not published"
                )
            fs.pipe_file(f"{dest}/{MANIFEST}", (package / MANIFEST).read_bytes())  # last
        fs.pipe_file(f"{base}/{name}/{LATEST}",
                     (json.dumps(_latest(name, version), indent=2) + "\n").encode())
    except StageError:
        raise
    except Exception as exc:  # botocore/s3fs errors: name the target; nothing secret in them
        # No bucket or no access fails the same way next time; anything else is the network.
        raise PublishError(
            f"{where}: upload failed ({type(exc).__name__}: {exc}); the version has no "
            "manifest, so it is not published; publishing again resumes",
            transient=not isinstance(exc, (FileNotFoundError, PermissionError)),
        ) from exc
    log.info("publish s3: %s %s %s (%s)", name, version, status, where)
    return status


# --------------------------------------------------------------------------- Hugging Face Hub


def hub_token(token_env: str, repo_id: str) -> str:
    """The token from the environment variable ``token_env`` (the error names the variable,
    never a value)."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise PublishError(
            f"hub target {repo_id}: environment variable {token_env} is not set; it must hold "
            "a Hugging Face token with write access (publish.targets[].token_env names it)"
        )
    return token


def publish_hub(package: Path, repo_id: str, *, private: bool, token_env: str) -> str:
    """Upload the package to the Hub repo ``repo_id`` as one commit tagged with its version.

    The commit makes the repo's main branch exactly the package (other files are deleted,
    ``.gitattributes`` kept); a version whose tag exists is "already published".
    """
    package = Path(package)
    manifest = read_manifest(package)
    version, name = manifest["version"], manifest.get("name", "")
    token = hub_token(token_env, repo_id)
    import huggingface_hub

    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        tags = {tag.name for tag in api.list_repo_refs(repo_id, repo_type="model").tags}
        if version in tags:
            status = ALREADY
        else:
            commit = api.upload_folder(
                repo_id=repo_id, folder_path=str(package), repo_type="model",
                commit_message=f"Publish {name} {version}",
                allow_patterns=[*sorted(manifest["files"]), MANIFEST],
                delete_patterns=["*"],
            )
            api.create_tag(repo_id, tag=version, revision=commit.oid, repo_type="model",
                           tag_message=f"{name} {version}", exist_ok=True)
            status = PUBLISHED
    except Exception as exc:
        raise PublishError(
            f"hub {repo_id}: publishing {version} failed ({type(exc).__name__}: {exc})",
            transient=is_network_error(exc),
        ) from exc
    log.info("publish hub: %s %s %s", repo_id, version, status)
    return status


# --------------------------------------------------------------------------- all targets


def publish(
    package: Path, targets: list[PublishTarget], *, name: str, version: str, root: Path,
) -> list[dict[str, Any]]:
    """Publish to every target in order; one result per target:
    ``{"type", "uri", "status": "published" | "already published", "location"}``."""
    package = Path(package)
    verify_package(package)  # what goes out is what the manifest says
    results = []
    for target in targets:
        if target.type == "local":
            written = Path(target.uri).expanduser()
            registry = written if written.is_absolute() else Path(root) / written
            status = publish_local(package, registry, name, version)
            # As the user wrote it (relative: to the project): no machine's paths in reports.
            location = (written / name / version).as_posix()
        elif target.type == "s3":
            status = publish_s3(package, target.uri, name, version,
                                endpoint_url=target.endpoint_url)
            location = f"s3://{parse_s3_uri(target.uri)}/{name}/{version}"
        elif target.type == "hub":
            status = publish_hub(package, target.uri, private=target.private,
                                 token_env=target.token_env)
            location = f"https://huggingface.co/{target.uri}/tree/{version}"
        else:  # guarded by PublishTarget's Literal; kept for a clear message
            raise PublishError(f"unknown publish target type {target.type!r}")
        results.append({"type": target.type, "uri": target.uri, "status": status,
                        "location": location})
    return results
