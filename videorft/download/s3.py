"""s3:// sources: one object or a whole prefix (mirrored, resuming by object size), via s3fs."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from videorft.download.archives import ArchiveLimits
from videorft.download.staging import (
    install_file,
    install_tree,
    make_marker,
    marker_matches,
    open_stage,
    rmtree,
    safe_name,
    verify_download,
)
from videorft.errors import DownloadError
from videorft.io import safe_join

if TYPE_CHECKING:
    from videorft.params import S3Params


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


def fetch_s3(
    uri: str, dest: Path, expected: str | None, s3: S3Params | None, progress: bool,
    limits: ArchiveLimits,
) -> None:
    if marker_matches(dest, uri, expected):
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
    stage = open_stage(dest, uri)
    if is_file:
        name = safe_name(PurePosixPath(rpath).name)
        files = stage / "files"
        files.mkdir(exist_ok=True)
        part = files / f"{name}.part"
        _s3_get(fs, uri, rpath, part, int(info.get("size") or 0), progress)
        try:
            digest = verify_download(part, expected, uri)
        except DownloadError:
            rmtree(stage)
            raise
        os.replace(part, files / name)
        install_file(files / name, uri, dest, digest, move=True, limits=limits)
    else:
        tree = stage / "tree"
        _s3_sync_prefix(fs, uri, rpath, tree, progress)
        install_tree(tree, dest, make_marker(uri, None))
    rmtree(stage)


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
