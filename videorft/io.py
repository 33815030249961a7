"""Small file helpers shared by every stage: atomic writes, JSONL, checksums, safe paths.

Every write goes to a temporary file in the destination folder and is renamed into place, so
a killed process never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

from videorft.errors import DataValidationError, UnsafePathError

#: Bytes per read when streaming a file (hashing, copying, downloading).
CHUNK_BYTES = 1 << 20


def _process_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()  # read once: os.umask can only be read by setting it


def temp_file_beside(path: Path) -> tuple[int, str]:
    """A new temp file in `path`'s folder, with the permissions `path` would get from a plain
    `open` (its current mode, else 0o666 less the umask), not mkstemp's owner-only 0o600:
    renamed into place, it must stay readable as params, datasets and published packages
    are by everyone else."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    os.fchmod(fd, mode)
    return fd, tmp


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def dumps_canonical(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): equal objects give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows atomically, one canonical JSON object per line; returns the row count."""
    count = 0
    with atomic_open(path, "w") as handle:
        for row in rows:
            handle.write(dumps_canonical(row) + "\n")
            count += 1
    return count


#: Python's parser recurses per nesting level; no annotation format nests this deep.
TOO_DEEP = "not valid JSON for an annotation (nested too deeply to parse)"


def parse_json_line(line: str, number: int, file: str) -> Any:
    """One JSONL line as data; a line that does not parse (or nests past the parser) raises
    DataValidationError naming the file and line number."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataValidationError(f"line {number}: not valid JSON ({exc.msg})", file=file) from None
    except RecursionError:
        raise DataValidationError(f"line {number}: {TOO_DEEP}", file=file) from None


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the objects of a JSONL file; a bad line raises naming the file and line number."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = parse_json_line(line, number, str(path))
            if not isinstance(row, dict):
                raise DataValidationError(
                    f"line {number}: expected a JSON object, got {type(row).__name__}",
                    file=str(path),
                )
            yield row


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataValidationError("file not found", file=str(path)) from None
    except json.JSONDecodeError as exc:
        raise DataValidationError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", file=str(path)
        ) from None
    except RecursionError:
        raise DataValidationError(TOO_DEEP, file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text ({exc.reason})", file=str(path)) from None


def sha256_file(path: str | os.PathLike, chunk_size: int = CHUNK_BYTES) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_relative_path(rel: str, *, file: str | None = None, record: str | None = None) -> str:
    """Validate a relative POSIX path from an annotation or archive: no absolute paths, no `..`.

    Returns the normalised path. Raises UnsafePathError naming the offending value.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise DataValidationError(f"empty or non-string path {rel!r}", file=file, record=record)
    if "\x00" in rel:
        raise UnsafePathError(f"path {rel!r} contains a NUL byte", file=file, record=record)
    posix = PurePosixPath(rel.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and posix.parts[0].endswith(":")):
        raise UnsafePathError(
            f"path {rel!r} is absolute; paths must be relative to the data root",
            file=file,
            record=record,
        )
    if ".." in posix.parts:
        raise UnsafePathError(
            f"path {rel!r} escapes the data root (contains '..')", file=file, record=record
        )
    return posix.as_posix()


def safe_join(root: str | os.PathLike, rel: str, **where: str | None) -> Path:
    """Join a relative path under `root`, refusing anything that resolves outside it."""
    rel = check_relative_path(rel, **where)
    root_resolved = Path(root).resolve()
    target = (root_resolved / rel).resolve()
    if target != root_resolved and root_resolved not in target.parents:
        raise UnsafePathError(
            f"path {rel!r} resolves outside the data root {str(root_resolved)!r} (symlink?)",
            **where,
        )
    return target


def replace_dir(new: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move the folder ``new`` to ``dest`` (same filesystem) by renames only. An existing
    ``dest`` is first moved aside and deleted once ``new`` is in place; if that rename fails
    the previous ``dest`` is put back. So ``dest`` is never a half-written folder."""
    new, dest = Path(new), Path(dest)
    if not dest.exists() and not dest.is_symlink():
        os.replace(new, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
    os.replace(dest, old / "previous")
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(old / "previous", dest)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
