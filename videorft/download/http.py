"""http(s) sources: one file, resumed with ``Range`` after an interruption, retried on what a
retry can fix (connection errors, timeouts, 408/429/5xx)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tqdm import tqdm

from videorft.download.archives import ArchiveLimits
from videorft.download.staging import (
    filename_from_url,
    install_file,
    marker_matches,
    open_stage,
    rmtree,
    verify_download,
)
from videorft.errors import DataValidationError, DownloadError
from videorft.io import CHUNK_BYTES, atomic_write_json, read_json

if TYPE_CHECKING:
    import requests

# Retries of one http download after a connection error, a timeout or a 5xx answer; waits
# RETRY_BACKOFF_S, then twice that, and so on. Module constants so tests can shorten them.
HTTP_RETRIES = 4
RETRY_BACKOFF_S = 0.5
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class _Retryable(Exception):
    """A failure worth another attempt (connection cut, timeout, 5xx)."""


def fetch_http(
    uri: str, dest: Path, expected: str | None, timeout_s: float, progress: bool,
    limits: ArchiveLimits,
) -> None:
    if marker_matches(dest, uri, expected):
        return
    name = filename_from_url(uri)
    files = open_stage(dest, uri) / "files"
    target = files / name
    if target.exists():  # downloaded by a run killed before it could install
        try:
            digest = verify_download(target, expected, uri)
        except DownloadError:
            digest = None  # stale under a new checksum: fetch it again
    else:
        digest = None
    if digest is None:
        part = download_http(uri, files / f"{name}.part", timeout_s=timeout_s, progress=progress)
        try:
            digest = verify_download(part, expected, uri)
        except DownloadError:
            rmtree(files.parent)  # a wrong file must not be resumed or installed later
            raise
        (files / f"{name}.part.json").unlink(missing_ok=True)
        os.replace(part, target)
    install_file(target, uri, dest, digest, move=True, limits=limits)
    rmtree(files.parent)


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
    chunks = response.raw.stream(CHUNK_BYTES, decode_content=False)
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
