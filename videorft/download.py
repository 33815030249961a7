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
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tqdm import tqdm

from videorft.errors import DataValidationError, DownloadError, UnsafePathError, is_network_error
from videorft.io import atomic_write_json, check_relative_path, read_json, safe_join, sha256_file

if TYPE_CHECKING:
    import requests

    from videorft.params import S3Params

MARKER_NAME = ".videorft-fetch.json"
MARKER_VERSION = 1
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")
# Retries of one http download after a connection error, a timeout or a 5xx answer; waits
# RETRY_BACKOFF_S, then twice that, and so on. Module constants so tests can shorten them.
HTTP_RETRIES = 4
RETRY_BACKOFF_S = 0.5
_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may unpack to: in total, and per byte of archive (zip bombs).

    Checked from the members' declared sizes before anything is written; extraction never
    writes more than a member declares (tarfile copies ``size`` bytes, zipfile stops at
    ``file_size``), so a lying header cannot get past them.
    """

    max_bytes: int = 500 * 10**9
    max_ratio: float = 100.0  # video archives unpack at ~1:1; 400 KB of zeros to 400 MB: 1000

    def check(self, label: str, archive: Path, unpacked: int) -> None:
        packed = max(archive.stat().st_size, 1)
        if unpacked > self.max_bytes:
            raise DownloadError(
                f"{label}: archive {archive.name} would unpack to {unpacked:,} bytes, more than "
                f"download.max_unpacked_gb allows ({self.max_bytes:,} bytes)")
        if unpacked / packed > self.max_ratio:
            raise DownloadError(
                f"{label}: archive {archive.name} would unpack to {unpacked / packed:,.0f} times "
                f"its size ({unpacked:,} from {packed:,} bytes), more than "
                f"download.max_compression_ratio ({self.max_ratio:g}): a zip bomb?")


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


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
    in_place = scheme in ("", "file") and _local_path(uri).resolve() == dest.resolve()
    if not in_place and _holds_foreign_data(dest):
        # Never delete what fetch did not put there (a fetch always leaves its marker).
        raise DownloadError(
            f"{uri}: destination {dest} already holds files that were not fetched by videorft "
            f"(no {MARKER_NAME}); move or delete it first"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(dest)

    if scheme in ("", "file"):
        _fetch_local(uri, dest, expected, archive_limits)
    elif scheme in ("http", "https"):
        _fetch_http(uri, dest, expected, http_timeout_s, progress, archive_limits)
    elif scheme == "s3":
        _fetch_s3(uri, dest, expected, s3, progress, archive_limits)
    elif scheme == "hf":
        _fetch_hf(uri, dest, expected)
    else:  # _scheme() only returns the schemes above
        raise AssertionError(scheme)
    return dest


def staging_dir(dest: str | os.PathLike[str]) -> Path:
    """Where partial downloads of ``dest`` live between runs (removed after a success)."""
    dest = Path(dest)
    return dest.parent / f".{dest.name}.fetch"


def is_archive(name: str) -> bool:
    """True when ``name`` ends with a suffix that ``fetch`` unpacks."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _holds_foreign_data(dest: Path) -> bool:
    return dest.is_dir() and read_marker(dest) is None and any(dest.iterdir())


def read_marker(dest: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a completed fetch into ``dest``, or None when there is none (or it is bad)."""
    try:
        marker = read_json(Path(dest) / MARKER_NAME)
    except DataValidationError:
        return None
    return marker if isinstance(marker, dict) else None


# --------------------------------------------------------------------------------------------
# uri parsing
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class HfDataset:
    """The parts of ``hf://datasets/OWNER/NAME[@REVISION][/SUBDIR]``."""

    repo_id: str
    revision: str | None
    subdir: str | None


def parse_hf_uri(uri: str) -> HfDataset:
    """Split an hf:// uri. A revision cannot contain '/' (use a commit hash or a plain tag)."""
    rest = uri[len("hf://") :].strip("/")
    parts = rest.split("/")
    if len(parts) < 3 or parts[0] != "datasets" or not parts[1] or not parts[2]:
        raise DownloadError(
            f"{uri}: expected hf://datasets/OWNER/NAME[@REVISION][/SUBDIR] "
            "(only dataset repositories are supported)"
        )
    owner, name = parts[1], parts[2]
    revision: str | None = None
    if "@" in name:
        name, revision = name.split("@", 1)
        if not name or not revision:
            raise DownloadError(f"{uri}: empty repository name or revision around '@'")
    subdir = "/".join(parts[3:]) or None
    if subdir is not None:
        try:
            subdir = check_relative_path(subdir, file=uri)
        except DataValidationError as exc:
            raise DownloadError(f"{uri}: bad sub-folder: {exc.problem}") from None
    return HfDataset(repo_id=f"{owner}/{name}", revision=revision, subdir=subdir)


def _filename_from_url(url: str) -> str:
    """The last path segment of a URL, decoded; 'download' when there is no usable one."""
    return _safe_name(PurePosixPath(unquote(urlsplit(url).path)).name)


def _safe_name(name: str) -> str:
    """``name`` when it is usable as one local file name, else 'download'."""
    if name in ("", ".", "..") or "\\" in name or "\x00" in name:
        return "download"
    return name


# --------------------------------------------------------------------------------------------
# Markers, staging and installing
# --------------------------------------------------------------------------------------------


def _marker_matches(dest: Path, uri: str, expected: str | None, source: Any = None) -> bool:
    marker = read_marker(dest)
    return (
        marker is not None
        and marker.get("uri") == uri
        and (expected is None or marker.get("sha256") == expected)
        and marker.get("source") == source
    )


def _make_marker(uri: str, digest: str | None, source: Any = None) -> dict[str, Any]:
    # Deterministic content (no timestamps): dest may itself be tracked by DVC.
    marker: dict[str, Any] = {"version": MARKER_VERSION, "uri": uri, "sha256": digest}
    if source is not None:
        marker["source"] = source
    return marker


def _remove_leftovers(dest: Path) -> None:
    """Delete temp trees a killed run left beside ``dest`` (never the resumable staging folder)."""
    prefix = f".{dest.name}.tmp-"
    for entry in dest.parent.iterdir():
        if entry.name.startswith(prefix):
            _rmtree(entry)


def _new_tmp(dest: Path, tag: str = "") -> Path:
    tmp = dest.parent / f".{dest.name}.tmp-{tag}{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _install(tree: Path, dest: Path, marker: dict[str, Any]) -> None:
    """Write the marker into ``tree`` and swap ``tree`` in as ``dest`` (two renames)."""
    atomic_write_json(tree / MARKER_NAME, marker)
    old: Path | None = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.tmp-old-{secrets.token_hex(4)}"
        os.rename(dest, old)
    os.rename(tree, dest)
    if old is not None:
        _rmtree(old)


def _open_stage(dest: Path, uri: str) -> Path:
    """The staging folder for ``uri``; one left by a fetch of another uri is discarded."""
    stage = staging_dir(dest)
    key = stage / "source.json"
    if stage.exists():
        try:
            same = read_json(key).get("uri") == uri
        except (DataValidationError, AttributeError):
            same = False
        if not same:
            _rmtree(stage)
    stage.mkdir(exist_ok=True)
    if not key.exists():
        atomic_write_json(key, {"uri": uri})
    return stage


def _install_file(
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
    tmp = _new_tmp(dest)
    try:
        if is_archive(name):
            extract_archive(path, tmp, uri=uri, name=name, limits=limits)
        elif move:
            os.replace(path, tmp / name)
        else:
            _link_or_copy(path, tmp / name)
        _install(tmp, dest, _make_marker(uri, digest, source))
    except BaseException:
        _rmtree(tmp)
        raise


def _verify(path: Path, expected: str | None, uri: str) -> str:
    """SHA-256 of ``path``; on a mismatch the file is deleted and DownloadError names both."""
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        path.unlink(missing_ok=True)
        raise DownloadError(
            f"{uri}: SHA-256 mismatch: expected {expected}, got {actual}; "
            "the downloaded file was deleted"
        )
    return actual


# --------------------------------------------------------------------------------------------
# Local paths
# --------------------------------------------------------------------------------------------


def _local_path(uri: str) -> Path:
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


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hardlink (free, and raw data is never edited in place) or copy across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _fetch_local(uri: str, dest: Path, expected: str | None, limits: ArchiveLimits) -> None:
    src = _local_path(uri)
    if not src.exists():
        raise DownloadError(f"{uri}: local path {src.absolute()} does not exist")
    if src.is_dir() and expected is not None:
        raise DownloadError(f"{uri}: sha256 applies to a single file, and this is a folder")
    source = _fingerprint(src)
    if _marker_matches(dest, uri, expected, source):
        return
    if src.is_file():
        digest = _verify_local(src, expected, uri)
        _install_file(src, uri, dest, digest, move=False, limits=limits, source=source)
        return
    src_real, dest_real = src.resolve(), dest.resolve()
    _refuse_links_outside(src, uri)
    if src_real == dest_real:  # the data is already where it belongs: just mark it
        atomic_write_json(dest / MARKER_NAME, _make_marker(uri, None, source))
        return
    if src_real in dest_real.parents or dest_real in src_real.parents:
        raise DownloadError(f"{uri}: the source folder and destination {dest} overlap")
    tmp = _new_tmp(dest)
    try:
        try:
            shutil.copytree(
                src,
                tmp,
                copy_function=_link_or_copy,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(MARKER_NAME),
            )
        except (shutil.Error, OSError) as exc:  # e.g. a dangling symlink in the source
            raise DownloadError(f"{uri}: could not copy {src}: {exc}") from exc
        _install(tmp, dest, _make_marker(uri, None, source))
    except BaseException:
        _rmtree(tmp)
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
    """Like _verify, but never deletes a user's own file."""
    actual = sha256_file(src)
    if expected is not None and actual != expected:
        raise DownloadError(f"{uri}: SHA-256 mismatch: expected {expected}, got {actual}")
    return actual


# --------------------------------------------------------------------------------------------
# http(s)
# --------------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A failure worth another attempt (connection cut, timeout, 5xx)."""


def _fetch_http(
    uri: str, dest: Path, expected: str | None, timeout_s: float, progress: bool,
    limits: ArchiveLimits,
) -> None:
    if _marker_matches(dest, uri, expected):
        return
    name = _filename_from_url(uri)
    files = _open_stage(dest, uri) / "files"
    target = files / name
    if target.exists():  # downloaded by a run killed before it could install
        try:
            digest = _verify(target, expected, uri)
        except DownloadError:
            digest = None  # stale under a new checksum: fetch it again
    else:
        digest = None
    if digest is None:
        part = download_http(uri, files / f"{name}.part", timeout_s=timeout_s, progress=progress)
        try:
            digest = _verify(part, expected, uri)
        except DownloadError:
            _rmtree(files.parent)  # a wrong file must not be resumed or installed later
            raise
        (files / f"{name}.part.json").unlink(missing_ok=True)
        os.replace(part, target)
    _install_file(target, uri, dest, digest, move=True, limits=limits)
    _rmtree(files.parent)


def download_http(url: str, part: Path, *, timeout_s: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` into ``part`` (resuming what is there) and return it when complete.

    A non-empty ``part`` is resumed with ``Range: bytes=N-`` (and ``If-Range`` with the
    validator saved beside it, so a changed remote file restarts from zero instead of being
    spliced): 206 appends, 200 starts over. Connection errors, timeouts and 5xx answers are
    retried HTTP_RETRIES times with exponential backoff; a response shorter than its
    Content-Length counts as a connection error and resumes.
    """
    import requests

    part.parent.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    with requests.Session() as session:
        for attempt in range(HTTP_RETRIES + 1):
            if attempt:
                time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
            try:
                _http_attempt(session, url, part, timeout_s, progress)
                return part
            except _Retryable as exc:
                last = exc
    raise DownloadError(f"{url}: download failed after {HTTP_RETRIES + 1} attempts: {last}",
                        transient=True)


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total length) of 'bytes A-B/N' or 'bytes */N'; None where unknown."""
    match = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _http_attempt(
    session: requests.Session, url: str, part: Path, timeout_s: float, progress: bool
) -> None:
    """One GET; returns when ``part`` holds the whole file, raises _Retryable to try again."""
    import requests

    meta = part.with_name(part.name + ".json")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # byte ranges must refer to the stored bytes
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = _read_validator(meta)
        if validator:
            headers["If-Range"] = validator
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout_s)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
    except requests.RequestException as exc:
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc

    with response:
        status = response.status_code
        if status == 416 and offset:
            _, total = _parse_content_range(response.headers.get("Content-Range"))
            if total == offset:
                return  # the part file was already complete
            part.unlink(missing_ok=True)
            raise _Retryable(f"HTTP 416 for a {offset}-byte partial file; restarting from zero")
        if status in _RETRY_STATUS:
            raise _Retryable(f"HTTP {status} {response.reason}")
        if status >= 400:
            hint = {403: " (access denied)", 404: " (not found)", 401: " (authentication needed)"}
            raise DownloadError(f"{url}: HTTP {status} {response.reason}{hint.get(status, '')}")
        if status == 206 and offset:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, not {offset}; restarting")
            mode = "ab"
        elif status == 200:
            offset, mode = 0, "wb"
            total = _int_header(response, "Content-Length")
        else:
            raise DownloadError(f"{url}: unexpected HTTP {status} {response.reason}")
        length = _int_header(response, "Content-Length")
        _write_validator(meta, response)

        received = 0
        with (
            open(part, mode) as handle,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            received = _copy_stream(response, handle, bar)
        if length is not None and received != length:
            raise _Retryable(f"connection closed after {received} of {length} bytes")
        size = part.stat().st_size
        if total is not None and size != total:
            raise _Retryable(f"have {size} of {total} bytes")


def _copy_stream(response: requests.Response, handle: IO[bytes], bar: tqdm) -> int:
    """Copy the raw (undecoded) body; read errors become _Retryable, write errors propagate."""
    import requests
    import urllib3

    received = 0
    chunks = response.raw.stream(_CHUNK, decode_content=False)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return received
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            handle.flush()  # keep what arrived: the next attempt resumes after it
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        handle.write(chunk)
        received += len(chunk)
        bar.update(len(chunk))


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value is not None and value.strip().isdigit() else None


def _read_validator(meta: Path) -> str | None:
    try:
        value = read_json(meta).get("validator")
    except (DataValidationError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _write_validator(meta: Path, response: requests.Response) -> None:
    """Save a strong ETag (or Last-Modified) so a later resume can send If-Range."""
    etag = response.headers.get("ETag")
    validator = (
        etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
    )
    if validator:
        atomic_write_json(meta, {"validator": validator})
    else:
        meta.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# s3
# --------------------------------------------------------------------------------------------


def _s3_filesystem(s3: S3Params | None) -> Any:
    """A fresh s3fs filesystem (no instance or listing cache: each fetch sees the bucket now)."""
    import s3fs

    return s3fs.S3FileSystem(
        anon=bool(s3 and s3.anon),
        endpoint_url=s3.endpoint_url if s3 else None,
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def _s3_error(uri: str, exc: BaseException) -> DownloadError:
    if isinstance(exc, FileNotFoundError):
        return DownloadError(f"{uri}: no such object or prefix")
    if isinstance(exc, PermissionError):
        return DownloadError(f"{uri}: access denied (check AWS credentials, or s3.anon)")
    # Anything else is the network or the service (timeouts, throttling, 5xx): worth a retry.
    return DownloadError(f"{uri}: {type(exc).__name__}: {exc}", transient=True)


def _fetch_s3(
    uri: str, dest: Path, expected: str | None, s3: S3Params | None, progress: bool,
    limits: ArchiveLimits,
) -> None:
    if _marker_matches(dest, uri, expected):
        return
    rpath = uri[len("s3://") :].strip("/")
    if not rpath:
        raise DownloadError(f"{uri}: no bucket named")
    fs = _s3_filesystem(s3)
    try:
        info = fs.info(rpath)
    except Exception as exc:  # botocore/aiohttp raise many types; all are "could not reach it"
        raise _s3_error(uri, exc) from exc
    is_file = info.get("type") == "file"
    if not is_file and expected is not None:
        raise DownloadError(f"{uri}: sha256 applies to a single file, and this is a prefix")
    stage = _open_stage(dest, uri)
    if is_file:
        name = _safe_name(PurePosixPath(rpath).name)
        files = stage / "files"
        files.mkdir(exist_ok=True)
        part = files / f"{name}.part"
        _s3_get(fs, uri, rpath, part, int(info.get("size") or 0), progress)
        try:
            digest = _verify(part, expected, uri)
        except DownloadError:
            _rmtree(stage)
            raise
        os.replace(part, files / name)
        _install_file(files / name, uri, dest, digest, move=True, limits=limits)
    else:
        tree = stage / "tree"
        _s3_sync_prefix(fs, uri, rpath, tree, progress)
        _install(tree, dest, _make_marker(uri, None))
    _rmtree(stage)


def _s3_list(fs: Any, uri: str, rpath: str) -> dict[str, int]:
    try:
        listing = fs.find(rpath, detail=True)
    except Exception as exc:
        raise _s3_error(uri, exc) from exc
    objects = {
        path: int(info.get("size") or 0)
        for path, info in listing.items()
        if info.get("type") == "file" and not path.endswith("/")
    }
    if not objects:
        raise DownloadError(f"{uri}: the prefix holds no objects")
    return objects


def _s3_sync_prefix(fs: Any, uri: str, rpath: str, tree: Path, progress: bool) -> None:
    """Mirror every object under ``rpath`` into ``tree``, skipping files already there with the
    same size (what an interrupted run finished), and deleting files that are not objects."""
    objects = _s3_list(fs, uri, rpath)
    tree.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[str, Path, int]] = []
    for path, size in sorted(objects.items()):
        rel = path[len(rpath) :].lstrip("/")
        target = safe_join(tree, rel, file=uri)  # a key with '..' must not escape the tree
        plan.append((path, target, size))
    wanted = {target for _, target, _ in plan}
    for local in sorted(tree.rglob("*"), reverse=True):
        if local.is_file() and local.resolve() not in wanted:
            local.unlink()
    todo = [(p, t, s) for p, t, s in plan if not (t.is_file() and t.stat().st_size == s)]
    with tqdm(
        total=sum(size for _, _, size in todo),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=uri,
        disable=not progress,
        leave=False,
    ) as bar:
        for path, target, size in todo:
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            _s3_get(fs, uri, path, part, size, False, bar=bar)
            os.replace(part, target)


def _s3_get(
    fs: Any, uri: str, rpath: str, part: Path, size: int, progress: bool, bar: tqdm | None = None
) -> None:
    """Download one object to ``part`` and check its size (s3fs retries reads itself)."""
    from fsspec.callbacks import Callback

    class _ToBar(Callback):
        def __init__(self, target: tqdm) -> None:
            super().__init__()
            self.bar, self.shown = target, 0

        def call(self, *args: Any, **kwargs: Any) -> None:
            self.bar.update(self.value - self.shown)
            self.shown = self.value

    own = bar is None
    bar = bar or tqdm(
        total=size, unit="B", unit_scale=True, desc=uri, disable=not progress, leave=False
    )
    try:
        fs.get_file(rpath, str(part), callback=_ToBar(bar))
    except Exception as exc:
        part.unlink(missing_ok=True)
        raise _s3_error(f"{uri} (object s3://{rpath})", exc) from exc
    finally:
        if own:
            bar.close()
    got = part.stat().st_size
    if got != size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{uri}: object s3://{rpath} arrived with {got} of {size} bytes",
                            transient=True)


# --------------------------------------------------------------------------------------------
# Hugging Face Hub
# --------------------------------------------------------------------------------------------


def _fetch_hf(uri: str, dest: Path, expected: str | None) -> None:
    repo = parse_hf_uri(uri)
    if expected is not None:
        raise DownloadError(f"{uri}: sha256 applies to a single file, not a Hub repository")
    if _marker_matches(dest, uri, None):
        return
    import huggingface_hub

    stage = _open_stage(dest, uri)
    tree = stage / "tree"  # kept between runs: snapshot_download resumes from it
    try:
        huggingface_hub.snapshot_download(
            repo.repo_id,
            repo_type="dataset",
            revision=repo.revision,
            local_dir=str(tree),
            allow_patterns=f"{repo.subdir}/**" if repo.subdir else None,
        )
    except Exception as exc:  # the Hub raises many types; all mean "not fetched"
        # A missing or gated repo fails the same way next time; a dropped connection may not.
        raise DownloadError(f"{uri}: {type(exc).__name__}: {exc}",
                            transient=is_network_error(exc)) from exc
    root = tree / repo.subdir if repo.subdir else tree
    if root == tree:
        _rmtree(tree / ".cache")  # huggingface_hub's download metadata, not data
    if not root.is_dir() or not any(p.is_file() for p in root.rglob("*")):
        where = f"under {repo.subdir!r} " if repo.subdir else ""
        raise DownloadError(f"{uri}: no files {where}in {repo.repo_id}")
    _install(root, dest, _make_marker(uri, None))
    _rmtree(stage)


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------


def extract_archive(
    archive: Path, out: Path, *, uri: str | None = None, name: str | None = None,
    limits: ArchiveLimits = ArchiveLimits(),
) -> int:
    """Unpack a zip or tar archive into the existing folder ``out``; return the file count.

    Every member is checked before anything is written: absolute names, ``..``, symlinks or
    hardlinks leading outside, and device files raise UnsafePathError naming the archive and
    the member. An archive past ``limits``, without files, or that cannot be read, raises
    DownloadError.
    """
    label = uri or str(archive)
    name = (name or archive.name).lower()
    try:
        if name.endswith(".zip"):
            count = _extract_zip(archive, out, label, limits)
        else:
            count = _extract_tar(archive, out, label, limits)
    except (DataValidationError, DownloadError):
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DownloadError(
            f"{label}: could not unpack {archive.name}: {type(exc).__name__}: {exc}"
        ) from exc
    if count == 0:
        raise DownloadError(f"{label}: archive {archive.name} contains no files")
    return count


def _unsafe(label: str, member: str, why: str) -> UnsafePathError:
    return UnsafePathError(f"archive member {member!r} {why}", file=label)


def _check_member_name(label: str, member: str) -> str:
    try:
        return check_relative_path(member, file=label)
    except DataValidationError as exc:
        raise _unsafe(label, member, f"is unsafe: {exc.problem}") from None


def _check_link_target(label: str, member: str, target: str) -> None:
    """A symlink's target, relative to the member's folder, must stay inside the tree."""
    if not target or target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise _unsafe(label, member, f"is a symlink to the absolute path {target!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member), target))
    if resolved == ".." or resolved.startswith("../"):
        raise _unsafe(label, member, f"is a symlink to {target!r}, outside the destination")


def _extract_tar(archive: Path, out: Path, label: str, limits: ArchiveLimits) -> int:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            name = member.name
            if member.isdir() and name.strip("/") in ("", "."):
                continue
            rel = _check_member_name(label, name)
            if member.issym():
                _check_link_target(label, rel, member.linkname)
            elif member.islnk():
                try:
                    check_relative_path(member.linkname, file=label)
                except DataValidationError:
                    raise _unsafe(
                        label,
                        name,
                        f"is a hardlink to {member.linkname!r}, outside the destination",
                    ) from None
            elif member.ischr() or member.isblk() or member.isfifo() or member.isdev():
                raise _unsafe(label, name, "is a device file or FIFO")
            elif not (member.isreg() or member.isdir()):
                raise _unsafe(label, name, f"has an unsupported type {member.type!r}")
        limits.check(label, archive, sum(m.size for m in members if m.isreg()))
        try:
            # The data filter re-checks each member against what is already on disk, which
            # catches escapes through symlinked folders that the name checks above cannot see.
            tar.extractall(out, members=members, filter="data")
        except tarfile.FilterError as exc:
            member_name = getattr(getattr(exc, "tarinfo", None), "name", "?")
            raise _unsafe(label, member_name, f"is unsafe: {exc}") from None
        return sum(1 for member in members if member.isreg() or member.islnk())


def _extract_zip(archive: Path, out: Path, label: str, limits: ArchiveLimits) -> int:
    count = 0
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            rel = _check_member_name(label, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", errors="replace")
                _check_link_target(label, rel, target)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                raise _unsafe(label, info.filename, "is a device file or FIFO")
        limits.check(label, archive, sum(info.file_size for info in infos))
        for info in infos:
            # Symlink entries are written as small files holding the target (as zipfile does):
            # creating real links would open the symlinked-folder escapes tar needs a filter for.
            target = safe_join(out, info.filename, file=label)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            count += 1
    return count
