"""Local sources: a file or folder on this machine (a path or file://), hard-linked or copied."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from videorft.download.archives import ArchiveLimits
from videorft.download.staging import (
    MARKER_NAME,
    install_file,
    install_tree,
    link_or_copy,
    make_marker,
    marker_matches,
    new_tmp,
    rmtree,
)
from videorft.errors import DownloadError, UnsafePathError
from videorft.io import atomic_write_json, sha256_file


def local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(f"{uri}: file:// uris must not name a host")
        return Path(unquote(parts.path))
    return Path(uri).expanduser()


def _fingerprint(src: Path) -> list[Any]:
    """Cheap change detector of a local source (sizes and mtimes), kept in the marker."""
    if src.is_file():
        st = src.stat()
        return [st.st_size, st.st_mtime_ns]
    digest = hashlib.sha256()
    count = 0
    for path in sorted(p for p in src.rglob("*") if p.is_file() and p.name != MARKER_NAME):
        st = path.stat()
        rel = path.relative_to(src).as_posix()
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        count += 1
    return [count, digest.hexdigest()]


def fetch_local(uri: str, dest: Path, expected: str | None, limits: ArchiveLimits) -> None:
    src = local_path(uri)
    if not src.exists():
        raise DownloadError(f"{uri}: local path {src.absolute()} does not exist")
    if src.is_dir() and expected is not None:
        raise DownloadError(f"{uri}: sha256 applies to a single file, and this is a folder")
    source = _fingerprint(src)
    if marker_matches(dest, uri, expected, source):
        return
    if src.is_file():
        digest = _verify_local(src, expected, uri)
        install_file(src, uri, dest, digest, move=False, limits=limits, source=source)
        return
    src_real, dest_real = src.resolve(), dest.resolve()
    _refuse_links_outside(src, uri)
    if src_real == dest_real:  # the data is already where it belongs: just mark it
        atomic_write_json(dest / MARKER_NAME, make_marker(uri, None, source))
        return
    if src_real in dest_real.parents or dest_real in src_real.parents:
        raise DownloadError(f"{uri}: the source folder and destination {dest} overlap")
    tmp = new_tmp(dest)
    try:
        try:
            shutil.copytree(
                src,
                tmp,
                copy_function=link_or_copy,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(MARKER_NAME),
            )
        except (shutil.Error, OSError) as exc:  # e.g. a dangling symlink in the source
            raise DownloadError(f"{uri}: could not copy {src}: {exc}") from exc
        install_tree(tmp, dest, make_marker(uri, None, source))
    except BaseException:
        rmtree(tmp)
        raise


def _refuse_links_outside(src: Path, uri: str) -> None:
    """A symlink in a source folder must point inside it: copying (or DVC hashing) one that
    points elsewhere would pull a file from outside the dataset into the project."""
    root = src.resolve()
    for folder, dirs, files in os.walk(src):  # does not descend into symlinked folders
        for name in (*dirs, *files):
            path = Path(folder) / name
            if not path.is_symlink():
                continue
            target = path.resolve()
            if target != root and root not in target.parents:
                raise UnsafePathError(
                    f"{path.relative_to(src).as_posix()} is a symlink to {target}, outside the "
                    "source folder; copy the file in, or point the uri at the folder that holds "
                    "it", file=uri)


def _verify_local(src: Path, expected: str | None, uri: str) -> str:
    """Like verify_download, but never deletes a user's own file."""
    actual = sha256_file(src)
    if expected is not None and actual != expected:
        raise DownloadError(f"{uri}: SHA-256 mismatch: expected {expected}, got {actual}")
    return actual
