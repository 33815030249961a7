"""Unpacking archives into a folder, safely: no member may land outside it, and limits on
the unpacked size (in total and per byte of archive) stop zip bombs before anything is written."""

from __future__ import annotations

import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from videorft.errors import DataValidationError, DownloadError, UnsafePathError
from videorft.io import CHUNK_BYTES, check_relative_path, safe_join

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")


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


def is_archive(name: str) -> bool:
    """True when ``name`` ends with a suffix that ``fetch`` unpacks."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


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
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
            count += 1
    return count
