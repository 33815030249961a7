"""videorft.download.fetch against real loopback servers (HTTP, moto S3) and real archives.

Only the Hugging Face Hub is faked: it cannot be reached from a test.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from videorft.download import MARKER_NAME, fetch, parse_hf_uri, read_marker, staging_dir
from videorft.download import http as http_source
from videorft.errors import DownloadError, UnsafePathError

if TYPE_CHECKING:  # registered as a plugin in conftest.py; importing it here first would
    from tests.servers import FileServer, S3Server  # stop pytest rewriting its asserts



PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
TREE = {"videos/a.mp4": b"video a" * 100, "videos/b.mp4": b"b" * 5000, "ann.json": b'{"x": 1}'}


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_source, "RETRY_BACKOFF_S", 0.0)


def files_under(root: Path) -> dict[str, bytes]:
    """Every regular file below root (the marker excluded), by relative POSIX path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != MARKER_NAME
    }


def leftovers(dest: Path) -> list[str]:
    """Temp or staging entries a fetch left beside dest."""
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}."))


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# --------------------------------------------------------------------------------------------
# http
# --------------------------------------------------------------------------------------------


def test_http_download_with_checksum(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["data/clip.bin"] = PAYLOAD
    dest = tmp_path / "raw" / "clip"
    url = http_server.url("data/clip.bin")

    assert fetch(url, dest, sha256=PAYLOAD_SHA.upper(), progress=True) == dest

    assert (dest / "clip.bin").read_bytes() == PAYLOAD
    assert read_marker(dest) == {"version": 1, "uri": url, "sha256": PAYLOAD_SHA}
    assert leftovers(dest) == []
    assert http_server.requests_for("data/clip.bin")[0].headers.get("Range") is None


def test_http_file_named_like_staging_bookkeeping(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["meta/source.json"] = b'{"real": "data"}'

    fetch(http_server.url("meta/source.json"), tmp_path / "meta", progress=False)

    assert files_under(tmp_path / "meta") == {"source.json": b'{"real": "data"}'}


def test_http_resumes_a_cut_connection(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["clip.bin"] = PAYLOAD
    http_server.cut_after["clip.bin"] = 123_456
    dest = tmp_path / "clip"

    fetch(http_server.url("clip.bin"), dest, sha256=PAYLOAD_SHA, progress=False)

    gets = http_server.requests_for("clip.bin")
    assert len(gets) == 2
    assert gets[0].headers.get("Range") is None
    assert gets[1].headers.get("Range") == "bytes=123456-"
    assert gets[1].headers.get("If-Range") == http_server.etag(PAYLOAD)
    assert (dest / "clip.bin").read_bytes() == PAYLOAD


def test_http_resumes_a_part_file_from_a_killed_run(
    http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["clip.bin"] = PAYLOAD
    dest = tmp_path / "clip"
    url = http_server.url("clip.bin")
    stage = staging_dir(dest)
    (stage / "files").mkdir(parents=True)
    (stage / "source.json").write_text(f'{{"uri": "{url}"}}')
    (stage / "files" / "clip.bin.part").write_bytes(PAYLOAD[:1000])

    fetch(url, dest, progress=False)

    (get,) = http_server.requests_for("clip.bin")
    assert get.headers.get("Range") == "bytes=1000-"
    assert (dest / "clip.bin").read_bytes() == PAYLOAD
    assert not stage.exists()


def test_http_staged_file_from_a_killed_run_is_reused_only_if_it_verifies(
    http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["clip.bin"] = PAYLOAD
    url = http_server.url("clip.bin")
    for name, staged, requests in [("good", PAYLOAD, 0), ("bad", b"corrupt" * 100, 1)]:
        dest = tmp_path / name
        stage = staging_dir(dest)
        (stage / "files").mkdir(parents=True)
        (stage / "source.json").write_text(f'{{"uri": "{url}"}}')
        (stage / "files" / "clip.bin").write_bytes(staged)  # downloaded, killed before unpacking
        before = len(http_server.requests_for("clip.bin"))

        fetch(url, dest, sha256=PAYLOAD_SHA, progress=False)

        assert len(http_server.requests_for("clip.bin")) - before == requests
        assert (dest / "clip.bin").read_bytes() == PAYLOAD


def test_http_part_file_of_another_uri_is_not_resumed(
    http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["clip.bin"] = PAYLOAD
    dest = tmp_path / "clip"
    stage = staging_dir(dest)
    (stage / "files").mkdir(parents=True)
    (stage / "source.json").write_text('{"uri": "http://127.0.0.1:1/other/clip.bin"}')
    (stage / "files" / "clip.bin.part").write_bytes(b"x" * 1000)

    fetch(http_server.url("clip.bin"), dest, progress=False)

    assert http_server.requests_for("clip.bin")[0].headers.get("Range") is None
    assert (dest / "clip.bin").read_bytes() == PAYLOAD


def test_http_restarts_from_zero_when_range_is_ignored(
    http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["clip.bin"] = PAYLOAD
    http_server.ignore_range.add("clip.bin")
    dest = tmp_path / "clip"
    url = http_server.url("clip.bin")
    stage = staging_dir(dest)
    (stage / "files").mkdir(parents=True)
    (stage / "source.json").write_text(f'{{"uri": "{url}"}}')
    (stage / "files" / "clip.bin.part").write_bytes(b"garbage that must not stay" * 10)

    fetch(url, dest, sha256=PAYLOAD_SHA, progress=False)

    (get,) = http_server.requests_for("clip.bin")
    assert get.headers.get("Range") == "bytes=260-"  # asked, got 200, started over
    assert (dest / "clip.bin").read_bytes() == PAYLOAD


def test_http_complete_part_file_needs_no_body(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["clip.bin"] = PAYLOAD
    dest = tmp_path / "clip"
    url = http_server.url("clip.bin")
    stage = staging_dir(dest)
    (stage / "files").mkdir(parents=True)
    (stage / "source.json").write_text(f'{{"uri": "{url}"}}')
    (stage / "files" / "clip.bin.part").write_bytes(PAYLOAD)

    fetch(url, dest, sha256=PAYLOAD_SHA, progress=False)  # the server answers 416

    assert len(http_server.requests_for("clip.bin")) == 1
    assert (dest / "clip.bin").read_bytes() == PAYLOAD


def test_http_checksum_mismatch_leaves_no_file(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["clip.tar.gz"] = PAYLOAD
    dest = tmp_path / "clip"
    url = http_server.url("clip.tar.gz")
    wrong = "0" * 64

    with pytest.raises(DownloadError) as err:
        fetch(url, dest, sha256=wrong, progress=False)

    message = str(err.value)
    assert url in message and wrong in message and PAYLOAD_SHA in message
    assert not dest.exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("code", [404, 403])
def test_http_client_errors_name_the_url(
    http_server: FileServer, tmp_path: Path, code: int
) -> None:
    if code == 403:
        http_server.status["secret.zip"] = 403
    url = http_server.url("secret.zip")

    with pytest.raises(DownloadError, match=rf"{re.escape(url)}: HTTP {code}") as info:
        fetch(url, tmp_path / "x", progress=False)

    assert len(http_server.requests_for("secret.zip")) == 1  # a 4xx is not retried
    assert not info.value.transient  # ... nor by the orchestrator
    assert not (tmp_path / "x").exists()


def test_http_retries_server_errors(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["clip.bin"] = PAYLOAD
    http_server.fail_first["clip.bin"] = 2

    fetch(http_server.url("clip.bin"), tmp_path / "clip", progress=False)

    assert len(http_server.requests_for("clip.bin")) == 3
    assert (tmp_path / "clip" / "clip.bin").read_bytes() == PAYLOAD


def test_http_gives_up_after_the_retries(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["clip.bin"] = PAYLOAD
    http_server.fail_first["clip.bin"] = 100
    url = http_server.url("clip.bin")

    with pytest.raises(
        DownloadError, match=rf"{re.escape(url)}: download failed after 5 attempts: HTTP 503"
    ) as info:
        fetch(url, tmp_path / "clip", progress=False)
    assert info.value.transient  # the orchestrator may try again later

    assert len(http_server.requests_for("clip.bin")) == http_source.HTTP_RETRIES + 1


def test_http_connection_refused(tmp_path: Path) -> None:
    from tests.servers import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}/clip.bin"

    with pytest.raises(DownloadError, match=rf"{re.escape(url)}: download failed after 5 attempts"):
        fetch(url, tmp_path / "clip", progress=False)


def test_http_archive_is_unpacked_and_rerun_is_a_noop(
    http_server: FileServer, tmp_path: Path
) -> None:
    http_server.files["v1/set.zip"] = make_zip(tmp_path / "v1.zip", TREE).read_bytes()
    http_server.files["v2/set.zip"] = make_zip(tmp_path / "v2.zip", {"new.txt": b"2"}).read_bytes()
    dest = tmp_path / "raw" / "set"
    first = http_server.url("v1/set.zip")

    fetch(first, dest, progress=False)
    assert files_under(dest) == TREE
    marker = read_marker(dest)
    assert marker is not None
    assert marker["sha256"] == hashlib.sha256(http_server.files["v1/set.zip"]).hexdigest()

    fetch(first, dest, progress=False)  # same uri: nothing is requested again
    assert len(http_server.requests_for("v1/set.zip")) == 1

    fetch(http_server.url("v2/set.zip"), dest, progress=False)  # changed uri: replaced
    assert files_under(dest) == {"new.txt": b"2"}
    assert leftovers(dest) == []


def test_failed_refetch_keeps_the_previous_dataset(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["set.zip"] = make_zip(tmp_path / "set.zip", TREE).read_bytes()
    dest = tmp_path / "set"
    fetch(http_server.url("set.zip"), dest, progress=False)

    with pytest.raises(DownloadError):
        fetch(http_server.url("missing.zip"), dest, progress=False)

    assert files_under(dest) == TREE
    assert read_marker(dest)["uri"] == http_server.url("set.zip")  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz", ".tar", ".tar.bz2", ".tar.xz"])
def test_archives_are_unpacked(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"set{suffix}"
    if suffix == ".zip":
        make_zip(archive, TREE)
    else:
        make_tar(archive, TREE, mode="w:" + suffix.removeprefix(".tar").lstrip("."))
    dest = tmp_path / "out" / "set"

    fetch(str(archive), dest)

    assert files_under(dest) == TREE
    assert read_marker(dest)["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()  # type: ignore[index]
    assert leftovers(dest) == []


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


def _unsafe_tars(tmp_path: Path) -> dict[str, tuple[list[tarfile.TarInfo], str, str]]:
    """Each case: the bad members, the member the error names, and why.

    The reasons come from videorft's own check, which runs before anything is written; the
    extraction filter behind it would also refuse most of these, but says less.
    """
    absolute = str(tmp_path / "abs_evil")
    return {
        "dotdot": ([_tar_member("../evil")], "../evil", "contains '..'"),
        "absolute": ([_tar_member(absolute)], absolute, "is absolute"),
        "symlink-out": (
            [_tar_member("passwd", tarfile.SYMTYPE, "/etc/passwd")],
            "passwd",
            "is a symlink to the absolute path '/etc/passwd'",
        ),
        "symlink-up": (
            [_tar_member("sub/up", tarfile.SYMTYPE, "../../evil")],
            "sub/up",
            "is a symlink to '../../evil', outside",
        ),
        "hardlink-out": (
            [_tar_member("hl", tarfile.LNKTYPE, "../evil")],
            "hl",
            "is a hardlink to '../evil', outside",
        ),
        "device": ([_tar_member("dev/null", tarfile.CHRTYPE)], "dev/null", "is a device file"),
        # Each link alone stays inside, but d/l resolves through d -> . to the parent folder:
        # only the extraction-time filter can see it.
        "symlink-chain": (
            [
                _tar_member("d", tarfile.SYMTYPE, "."),
                _tar_member("d/l", tarfile.SYMTYPE, ".."),
                _tar_member("d/l/evil"),
            ],
            "d/l",
            "outside the destination",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "dotdot",
        "absolute",
        "symlink-out",
        "symlink-up",
        "hardlink-out",
        "device",
        "symlink-chain",
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path: Path, case: str) -> None:
    members, culprit, why = _unsafe_tars(tmp_path)[case]
    archive = tmp_path / "src" / "bad.tar"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tf:
        tf.addfile(_tar_member("ok.txt"), io.BytesIO(b""))
        for member in members:
            tf.addfile(member, io.BytesIO(b""))
    dest = tmp_path / "work" / "data"
    dest.parent.mkdir()

    with pytest.raises(UnsafePathError) as err:
        fetch(str(archive), dest)

    assert str(archive) in str(err.value)
    assert repr(culprit) in str(err.value)
    assert why in str(err.value)
    assert not dest.exists()
    assert leftovers(dest) == []
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert written == ["src", "src/bad.tar", "work"]


def test_unsafe_zip_members_are_refused(tmp_path: Path) -> None:
    for name, make in {
        "../evil": lambda zf: zf.writestr("../evil", b"x"),
        "/abs_evil": lambda zf: zf.writestr(zipfile.ZipInfo("/abs_evil"), b"x"),
        "passwd": lambda zf: zf.writestr(_zip_symlink("passwd"), "/etc/passwd"),
    }.items():
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("ok.txt", b"fine")
            make(zf)
        dest = tmp_path / "work" / "data"

        with pytest.raises(UnsafePathError, match=rf"bad\.zip.*{name!r}"):
            fetch(str(archive), dest)

        assert not dest.exists()
        assert leftovers(dest) == []
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.zip", "work"]


def _zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def test_symlinks_inside_the_tree_are_kept(tmp_path: Path) -> None:
    archive = tmp_path / "set.tar"
    with tarfile.open(archive, "w") as tf:
        data = _tar_member("videos/a.mp4")
        data.size = 3
        tf.addfile(data, io.BytesIO(b"abc"))
        tf.addfile(_tar_member("latest.mp4", tarfile.SYMTYPE, "videos/a.mp4"))

    fetch(str(archive), tmp_path / "out")

    assert (tmp_path / "out" / "latest.mp4").read_bytes() == b"abc"


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_empty_archive_is_an_error(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"empty{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("only-a-folder/", b"")
    else:
        make_tar(archive, {})

    with pytest.raises(
        DownloadError,
        match=rf"{re.escape(str(archive))}: archive empty{re.escape(suffix)} contains no files",
    ):
        fetch(str(archive), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path / "out") == []


def test_corrupt_archive_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    good = make_tar(tmp_path / "good.tar.gz", TREE).read_bytes()
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(good[: len(good) // 2])

    with pytest.raises(DownloadError, match=r"cut\.tar\.gz: could not unpack"):
        fetch(str(archive), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path / "out") == []


def test_half_unpacked_leftovers_are_cleaned(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "set.zip", TREE)
    dest = tmp_path / "out"
    (tmp_path / ".out.tmp-dead1234").mkdir()  # what a run killed mid-extraction leaves
    (tmp_path / ".out.tmp-dead1234" / "half.mp4").write_bytes(b"half")
    dest.mkdir()  # an empty folder is fine to replace

    fetch(str(archive), dest)

    assert files_under(dest) == TREE
    assert leftovers(dest) == []


def test_files_not_fetched_by_videorft_are_never_replaced(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "set.zip", TREE)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("put here by hand")  # no marker

    with pytest.raises(DownloadError, match=r"already holds files that were not fetched"):
        fetch(str(archive), dest)

    assert files_under(dest) == {"mine.txt": b"put here by hand"}
    fetch(str(dest), dest)  # the data is already in place: fetch just marks it
    assert read_marker(dest)["uri"] == str(dest)  # type: ignore[index]
    marked = (dest / MARKER_NAME).stat().st_mtime_ns
    fetch(str(dest), dest)  # and then leaves it alone
    assert (dest / MARKER_NAME).stat().st_mtime_ns == marked


# --------------------------------------------------------------------------------------------
# local paths
# --------------------------------------------------------------------------------------------


def test_local_folder_is_hardlinked_and_refetched_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "source"
    for rel, data in TREE.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    dest = tmp_path / "raw" / "set"

    fetch("source", dest)  # relative to the current directory
    assert files_under(dest) == TREE
    assert (dest / "ann.json").stat().st_ino == (src / "ann.json").stat().st_ino
    marker_mtime = (dest / MARKER_NAME).stat().st_mtime_ns

    fetch("source", dest)  # unchanged: no-op
    assert (dest / MARKER_NAME).stat().st_mtime_ns == marker_mtime

    (src / "extra.txt").write_bytes(b"new")
    fetch("source", dest)
    assert files_under(dest) == {**TREE, "extra.txt": b"new"}


def test_local_archive_and_plain_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_tar(tmp_path / "set.tgz", TREE)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.chdir(tmp_path)

    fetch("set.tgz", tmp_path / "a", sha256=digest)
    assert files_under(tmp_path / "a") == TREE

    (tmp_path / "notes.csv").write_bytes(b"a,b\n")
    fetch(f"file://{tmp_path / 'notes.csv'}", tmp_path / "b")
    assert files_under(tmp_path / "b") == {"notes.csv": b"a,b\n"}


def test_local_checksum_mismatch_keeps_the_users_file(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "set.tgz", TREE)

    with pytest.raises(DownloadError, match=r"SHA-256 mismatch: expected f{64}"):
        fetch(str(archive), tmp_path / "out", sha256="f" * 64)
    assert archive.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("uri", "kwargs", "message"),
    [
        ("does/not/exist", {}, r"does/not/exist: local path .* does not exist"),
        ("ftp://host/set.zip", {}, r"ftp://host/set.zip: unsupported scheme 'ftp'"),
        ("gs://bucket/set", {}, r"gs://bucket/set: unsupported scheme 'gs'"),
        (".", {"sha256": "a" * 64}, r"sha256 applies to a single file"),
        ("set.zip", {"sha256": "xyz"}, r"set.zip: sha256 'xyz' is not a 64-character hex"),
        ("hf://models/org/name", {}, r"hf://models/org/name: expected hf://datasets/"),
        ("", {}, r"empty uri"),
        ("set.zip", {"dest": "."}, r"set.zip: destination '\.' must name a folder"),
    ],
)
def test_bad_uris_name_the_uri(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    uri: str,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    dest = kwargs.pop("dest", tmp_path / "out")
    with pytest.raises(DownloadError, match=message):
        fetch(uri, dest, **kwargs)


# --------------------------------------------------------------------------------------------
# s3
# --------------------------------------------------------------------------------------------


@pytest.fixture
def s3_gets(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Spy on s3fs object downloads; optionally make the Nth one fail like a dropped network."""
    import s3fs

    original = s3fs.S3FileSystem._get_file
    calls: list[str] = []
    fail_at: dict[str, int] = {}

    async def spy(self: Any, rpath: str, lpath: str, **kwargs: Any) -> Any:
        calls.append(rpath)
        if len(calls) == fail_at.get("n"):
            raise ConnectionError("network dropped (test)")
        return await original(self, rpath, lpath, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_get_file", spy)

    def control(fail_on_call: int | None = None) -> list[str]:
        if fail_on_call is not None:
            fail_at["n"] = len(calls) + fail_on_call
        return calls

    return control


def _upload_tree(s3: S3Server, bucket: str, prefix: str) -> None:
    s3.create_bucket(bucket)
    for rel, data in TREE.items():
        s3.put(bucket, f"{prefix}/{rel}", data)
    s3.put(bucket, f"{prefix}0/not-mine.txt", b"sibling prefix")  # shares the prefix string


def test_s3_prefix_is_mirrored_once(
    s3_server: S3Server, s3_gets: Callable[..., list[str]], tmp_path: Path
) -> None:
    from videorft.params import S3Params

    _upload_tree(s3_server, "bucket", "datasets/set1")
    params = S3Params(endpoint_url=s3_server.endpoint_url)
    dest = tmp_path / "raw" / "set1"

    fetch("s3://bucket/datasets/set1", dest, s3=params, progress=True)
    assert files_under(dest) == TREE
    assert len(s3_gets()) == len(TREE)
    inodes = {rel: (dest / rel).stat().st_ino for rel in TREE}

    fetch("s3://bucket/datasets/set1", dest, s3=params, progress=False)
    assert len(s3_gets()) == len(TREE)  # nothing downloaded again
    assert {rel: (dest / rel).stat().st_ino for rel in TREE} == inodes
    assert leftovers(dest) == []


def test_s3_interrupted_sync_skips_finished_objects(
    s3_server: S3Server, s3_gets: Callable[..., list[str]], tmp_path: Path
) -> None:
    from videorft.params import S3Params

    _upload_tree(s3_server, "bucket", "set")
    params = S3Params(endpoint_url=s3_server.endpoint_url)
    dest = tmp_path / "set"
    s3_gets(fail_on_call=2)

    with pytest.raises(DownloadError, match=r"s3://bucket/set .*network dropped"):
        fetch("s3://bucket/set", dest, s3=params, progress=False)
    assert not dest.exists()  # half a prefix never looks like a dataset
    first_done = s3_gets()[0]

    fetch("s3://bucket/set", dest, s3=params, progress=False)

    calls = s3_gets()
    assert len(calls) == 2 + len(TREE) - 1
    assert first_done not in calls[2:]
    assert files_under(dest) == TREE


def test_s3_resumed_sync_drops_files_that_are_not_objects(
    s3_server: S3Server, tmp_path: Path
) -> None:
    from videorft.params import S3Params

    _upload_tree(s3_server, "bucket", "set")
    dest = tmp_path / "set"
    tree = staging_dir(dest) / "tree"
    tree.mkdir(parents=True)
    (staging_dir(dest) / "source.json").write_text('{"uri": "s3://bucket/set"}')
    (tree / "deleted-since.txt").write_bytes(b"stale")
    (tree / "ann.json.part").write_bytes(b"half")
    (tree / "videos").mkdir()
    (tree / "videos" / "b.mp4").write_bytes(b"wrong size")

    fetch("s3://bucket/set", dest, s3=S3Params(endpoint_url=s3_server.endpoint_url))

    assert files_under(dest) == TREE


def test_s3_keys_with_dotdot_cannot_escape(s3_server: S3Server, tmp_path: Path) -> None:
    from videorft.params import S3Params

    s3_server.create_bucket("bucket")
    s3_server.put("bucket", "set/ok.txt", b"ok")
    s3_server.put("bucket", "set/../evil.txt", b"evil")  # a legal S3 key
    dest = tmp_path / "raw" / "set"

    with pytest.raises(UnsafePathError, match=r"s3://bucket/set: path '\.\./evil\.txt' escapes"):
        fetch("s3://bucket/set", dest, s3=S3Params(endpoint_url=s3_server.endpoint_url))

    assert not dest.exists()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "source.json"]


def test_s3_single_archive_object_with_checksum(s3_server: S3Server, tmp_path: Path) -> None:
    from videorft.params import S3Params

    data = make_tar(tmp_path / "set.tar.gz", TREE).read_bytes()
    s3_server.create_bucket("bucket")
    s3_server.put("bucket", "archives/set.tar.gz", data)
    params = S3Params(endpoint_url=s3_server.endpoint_url)
    uri = "s3://bucket/archives/set.tar.gz"

    fetch(uri, tmp_path / "out", sha256=hashlib.sha256(data).hexdigest(), s3=params)
    assert files_under(tmp_path / "out") == TREE

    with pytest.raises(DownloadError, match=rf"{re.escape(uri)}: SHA-256 mismatch"):
        fetch(uri, tmp_path / "bad", sha256="0" * 64, s3=params, progress=False)
    assert not (tmp_path / "bad").exists()
    assert not staging_dir(tmp_path / "bad").exists()


def test_s3_missing_prefix_names_the_uri(s3_server: S3Server, tmp_path: Path) -> None:
    from videorft.params import S3Params

    s3_server.create_bucket("bucket")
    params = S3Params(endpoint_url=s3_server.endpoint_url)

    with pytest.raises(DownloadError, match="s3://bucket/nothing: no such object or prefix"):
        fetch("s3://bucket/nothing", tmp_path / "out", s3=params, progress=False)
    with pytest.raises(DownloadError, match="s3://no-bucket/x: no such object or prefix"):
        fetch("s3://no-bucket/x", tmp_path / "out", s3=params, progress=False)


# --------------------------------------------------------------------------------------------
# Hugging Face Hub
# --------------------------------------------------------------------------------------------


def test_hf_snapshot_download_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Hub cannot be reached from tests, so snapshot_download is replaced by a fake that
    records its arguments and writes what the real one would (files plus .cache metadata)."""
    import huggingface_hub

    calls: list[dict[str, Any]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        root = Path(kwargs["local_dir"])
        for rel, data in {**TREE, ".cache/huggingface/x.metadata": b"m"}.items():
            path = root / "sub" / rel if not rel.startswith(".cache") else root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return str(root)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    dest = tmp_path / "raw" / "set"

    fetch("hf://datasets/org/name@v1/sub", dest)
    fetch("hf://datasets/org/name@v1/sub", dest)  # marker: not downloaded again

    (call,) = calls
    assert call["repo_id"] == "org/name"
    assert call["repo_type"] == "dataset"
    assert call["revision"] == "v1"
    assert call["allow_patterns"] == "sub/**"
    assert Path(call["local_dir"]).parent == staging_dir(dest)
    assert files_under(dest) == TREE
    assert leftovers(dest) == []


def test_hf_errors_name_the_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake Hub (unreachable from tests) failing as for an unknown repository."""
    import huggingface_hub

    def failing(repo_id: str, **kwargs: Any) -> str:
        raise OSError(f"Repository Not Found for {repo_id}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(DownloadError, match="hf://datasets/org/gone: OSError: Repository Not"):
        fetch("hf://datasets/org/gone", tmp_path / "out")


@pytest.mark.parametrize(
    ("uri", "repo_id", "revision", "subdir"),
    [
        ("hf://datasets/org/name", "org/name", None, None),
        ("hf://datasets/org/name@main", "org/name", "main", None),
        ("hf://datasets/org/name/a/b/", "org/name", None, "a/b"),
        ("hf://datasets/org/name@0123abc/videos", "org/name", "0123abc", "videos"),
    ],
)
def test_parse_hf_uri(uri: str, repo_id: str, revision: str | None, subdir: str | None) -> None:
    parsed = parse_hf_uri(uri)
    assert (parsed.repo_id, parsed.revision, parsed.subdir) == (repo_id, revision, subdir)


@pytest.mark.parametrize(
    "uri",
    [
        "hf://datasets/org",
        "hf://spaces/org/name",
        "hf://datasets/org/@v1",
        "hf://datasets/o/n/../x",
    ],
)
def test_parse_hf_uri_refuses(uri: str) -> None:
    with pytest.raises(DownloadError, match=re.escape(uri)):
        parse_hf_uri(uri)


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_bombs_are_refused_before_anything_is_written(tmp_path: Path, suffix: str) -> None:
    """8 MB of zeros in a few KB: past the compression-ratio limit; a real tree passes it, and
    a total-size limit below the tree's size refuses that too. Nothing lands in dest."""
    from videorft.download import ArchiveLimits

    zeros = bytes(8 * 2**20)
    bomb = tmp_path / f"bomb{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("videos/zeros.mp4", zeros)
    else:
        make_tar(bomb, {"videos/zeros.mp4": zeros})
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DownloadError, match=r"times its size .*max_compression_ratio \(100\)"):
        fetch(str(bomb), tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path / "out") == []

    tree = (make_zip if suffix == ".zip" else make_tar)(tmp_path / f"tree{suffix}", TREE)
    total = sum(len(v) for v in TREE.values())
    with pytest.raises(DownloadError, match=rf"{total:,} bytes, more than .*max_unpacked_gb"):
        fetch(str(tree), tmp_path / "out", archive_limits=ArchiveLimits(max_bytes=total - 1))
    assert not (tmp_path / "out").exists()
    fetch(str(tree), tmp_path / "out", archive_limits=ArchiveLimits(max_bytes=total))
    assert (tmp_path / "out").is_dir()


def test_symlinks_out_of_a_local_source_are_refused(tmp_path: Path) -> None:
    """Copied, or marked in place (a uri that is already paths.raw/NAME, which DVC then
    hashes): either way a link to a file outside the source would bring it into the project.
    Links that stay inside are fine."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not part of the dataset")
    src = tmp_path / "set"
    (src / "videos").mkdir(parents=True)
    (src / "videos" / "a.mp4").write_bytes(b"a")
    (src / "videos" / "alias.mp4").symlink_to("a.mp4")  # inside: fine
    fetch(str(src), tmp_path / "copy")
    assert (tmp_path / "copy" / "videos" / "alias.mp4").read_bytes() == b"a"

    (src / "videos" / "leak.txt").symlink_to(secret)
    for dest in (tmp_path / "copy2", src):  # copied, and in place
        with pytest.raises(UnsafePathError, match=r"videos/leak\.txt is a symlink to .*secret"):
            fetch(str(src), dest)
    assert not (tmp_path / "copy2").exists()
    assert not (src / MARKER_NAME).exists()
