"""Fetch one dataset into a folder: a local path, http(s), s3:// or hf://datasets/.

Why it is built this way:

- **Nothing looks complete before it is.** Downloads go to a staging folder beside ``dest``
  (``.NAME.fetch/``: ``.part`` files, half-synced prefixes), archives are unpacked into a temp
  folder beside ``dest``, and only a finished tree is renamed to ``dest`` together with its
  marker ``.videorft-fetch.json``. A killed run leaves either the old ``dest`` or none at all.
- **Re-runs are cheap.** A ``dest`` whose marker names the same uri (and, when given, the same
  checksum) is left alone; a changed uri is fetched again and replaces it. An interrupted http
  download resumes with ``Range``; an interrupted s3 prefix skips objects already staged with the
  right size. To refresh a remote that changed under the same uri, delete ``dest``.
- **Archives cannot write outside ``dest``.** Every member is checked (absolute names, ``..``,
  links pointing outside, device files) before anything is written, and tar extraction also runs
  under Python's ``data`` filter, which catches symlink chains a name check cannot see.

Not safe for two processes fetching into the same ``dest`` at once (each source has its own).

One module per kind of source (``local``, ``http``, ``s3``, ``hf``), with ``staging`` (markers,
staging folders, installing) and ``archives`` (safe unpacking) beneath them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from videorft.download.archives import ArchiveLimits, extract_archive, is_archive
from videorft.download.hf import HfDataset, fetch_hf, parse_hf_uri
from videorft.download.http import download_http, fetch_http
from videorft.download.local import fetch_local, local_path
from videorft.download.s3 import fetch_s3
from videorft.download.staging import (
    MARKER_NAME,
    holds_foreign_data,
    read_marker,
    remove_leftovers,
    staging_dir,
)
from videorft.errors import DownloadError

if TYPE_CHECKING:
    from videorft.params import S3Params

__all__ = [
    "MARKER_NAME", "ArchiveLimits", "HfDataset", "download_http", "extract_archive", "fetch",
    "is_archive", "parse_hf_uri", "read_marker", "staging_dir",
]

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SUPPORTED = (
    "a local path, file://, http://, https://, s3://BUCKET/PREFIX or hf://datasets/OWNER/NAME"
)


def _scheme(uri: str) -> str:
    """The uri's scheme ('' for a plain local path); unsupported schemes are refused by name."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    if not match:
        return ""
    scheme = match.group(1).lower()
    if scheme not in ("file", "http", "https", "s3", "hf"):
        raise DownloadError(f"{uri}: unsupported scheme {scheme!r}; use {_SUPPORTED}")
    return scheme


def _normalise_sha256(sha256: str | None, uri: str) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower().removeprefix("sha256:")
    if not _SHA256_RE.match(value):
        raise DownloadError(f"{uri}: sha256 {sha256!r} is not a 64-character hex SHA-256 digest")
    return value


def fetch(
    uri: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    s3: S3Params | None = None,
    http_timeout_s: float = 60.0,
    progress: bool = True,
    archive_limits: ArchiveLimits = ArchiveLimits(),
) -> Path:
    """Materialise the dataset at ``uri`` as the folder ``dest`` and return ``dest``.

    ``uri`` is a local file or folder (relative to the current directory, or ``file://``),
    ``http(s)://`` (one file), ``s3://bucket/key-or-prefix`` or
    ``hf://datasets/OWNER/NAME[@REVISION][/SUBDIR]``. A fetched file that is an archive is
    unpacked into ``dest``; any other file is placed in ``dest`` under its own name. ``sha256``
    is the expected digest of that single file (archive or not); it makes no sense for a folder,
    prefix or Hub repository and is refused there. An archive past ``archive_limits`` is
    refused before it is unpacked.
    """
    dest = Path(dest)
    if not isinstance(uri, str) or not uri.strip():
        raise DownloadError(f"empty uri for {dest}")
    uri = uri.strip()
    expected = _normalise_sha256(sha256, uri)
    scheme = _scheme(uri)
    if dest.name in ("", ".", ".."):
        raise DownloadError(f"{uri}: destination {str(dest)!r} must name a folder")
    if dest.exists() and not dest.is_dir():
        raise DownloadError(f"{uri}: destination {dest} exists and is not a folder")
    in_place = scheme in ("", "file") and local_path(uri).resolve() == dest.resolve()
    if not in_place and holds_foreign_data(dest):
        # Never delete what fetch did not put there (a fetch always leaves its marker).
        raise DownloadError(
            f"{uri}: destination {dest} already holds files that were not fetched by videorft "
            f"(no {MARKER_NAME}); move or delete it first"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(dest)

    if scheme in ("", "file"):
        fetch_local(uri, dest, expected, archive_limits)
    elif scheme in ("http", "https"):
        fetch_http(uri, dest, expected, http_timeout_s, progress, archive_limits)
    elif scheme == "s3":
        fetch_s3(uri, dest, expected, s3, progress, archive_limits)
    elif scheme == "hf":
        fetch_hf(uri, dest, expected)
    else:  # _scheme() only returns the schemes above
        raise AssertionError(scheme)
    return dest
