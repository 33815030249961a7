"""Markers, staging folders and installing: how a fetch makes ``dest`` appear complete or not at
all (a tree is built beside it, then renamed in with its marker)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from videorft.download.archives import ArchiveLimits, extract_archive, is_archive
from videorft.errors import DataValidationError, DownloadError
from videorft.io import atomic_write_json, read_json, sha256_file

MARKER_NAME = ".videorft-fetch.json"
MARKER_VERSION = 1


def staging_dir(dest: str | os.PathLike[str]) -> Path:
    """Where partial downloads of ``dest`` live between runs (removed after a success)."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.fetch"


def holds_foreign_data(dest: Path) -> bool:
    return dest.is_dir() and read_marker(dest) is None and any(dest.iterdir())


def read_marker(dest: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a completed fetch into ``dest``, or None when there is none (or it is bad)."""
    try:
        marker = read_json(Path(dest) / MARKER_NAME)
    except DataValidationError:
        return None
    return marker if isinstance(marker, dict) else None


def filename_from_url(url: str) -> str:
    """The last path segment of a URL, decoded; 'download' when there is no usable one."""
    return safe_name(PurePosixPath(unquote(urlsplit(url).path)).name)


def safe_name(name: str) -> str:
    """``name`` when it is usable as one local file name, else 'download'."""
    if name in ("", ".", "..") or "\\" in name or "\x00" in name:
        return "download"
    return name


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hardlink (free, and raw data is never edited in place) or copy across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def marker_matches(dest: Path, uri: str, expected: str | None, source: Any = None) -> bool:
    marker = read_marker(dest)
    return (
        marker is not None
        and marker.get("uri") == uri
        and (expected is None or marker.get("sha256") == expected)
        and marker.get("source") == source
    )


def make_marker(uri: str, digest: str | None, source: Any = None) -> dict[str, Any]:
    # Deterministic content (no timestamps): dest may itself be tracked by DVC.
    marker: dict[str, Any] = {"version": MARKER_VERSION, "uri": uri, "sha256": digest}
    if source is not None:
        marker["source"] = source
    return marker


def remove_leftovers(dest: Path) -> None:
    """Delete temp trees a killed run left beside ``dest`` (never the resumable staging folder)."""
    prefix = f".{dest.name}.tmp-"
    for entry in dest.parent.iterdir():
        if entry.name.startswith(prefix):
            rmtree(entry)


def new_tmp(dest: Path, tag: str = "") -> Path:
    tmp = dest.parent / f".{dest.name}.tmp-{tag}{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def install_tree(tree: Path, dest: Path, marker: dict[str, Any]) -> None:
    """Write the marker into ``tree`` and swap ``tree`` in as ``dest`` (two renames)."""
    atomic_write_json(tree / MARKER_NAME, marker)
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.tmp-old-{secrets.token_hex(4)}"
        os.rename(dest, old)
    os.rename(tree, dest)
    if old is not None:
        rmtree(old)


def open_stage(dest: Path, uri: str) -> Path:
    """The staging folder for ``uri``; one left by a fetch of another uri is discarded."""
    stage = staging_dir(dest)
    key = stage / "source.json"
    if stage.exists():
        try:
            same = read_json(key).get("uri") == uri
        except (DataValidationError, AttributeError):
            same = False
        if not same:
            rmtree(stage)
    stage.mkdir(exist_ok=True)
    if not key.exists():
        atomic_write_json(key, {"uri": uri})
    return stage


def install_file(
    path: Path,
    uri: str,
    dest: Path,
    digest: str,
    *,
    name: str | None = None,
    move: bool,
    limits: ArchiveLimits,
    source: Any = None,
) -> None:
    """Unpack an archive, or place a single file, into a fresh tree and install it as dest."""
    name = name or path.name
    tmp = new_tmp(dest)
    try:
        if is_archive(name):
            extract_archive(path, tmp, uri=uri, name=name, limits=limits)
        elif move:
            os.replace(path, tmp / name)
        else:
            link_or_copy(path, tmp / name)
        install_tree(tmp, dest, make_marker(uri, digest, source))
    except BaseException:
        rmtree(tmp)
        raise


def verify_download(path: Path, expected: str | None, uri: str) -> str:
    """SHA-256 of ``path``; on a mismatch the file is deleted and DownloadError names both."""
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{uri}: SHA-256 mismatch: expected {expected}, got {actual}; "
            "the downloaded file was deleted"
        )
    return actual
