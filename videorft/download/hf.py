"""hf://datasets/ sources: a dataset repository (or one folder of it) from the Hugging Face Hub."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from videorft.download.staging import install_tree, make_marker, marker_matches, open_stage, rmtree
from videorft.errors import DataValidationError, DownloadError, is_network_error
from videorft.io import check_relative_path


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


def fetch_hf(uri: str, dest: Path, expected: str | None) -> None:
    repo = parse_hf_uri(uri)
    if expected is not None:
        raise DownloadError(f"{uri}: sha256 applies to a single file, not a Hub repository")
    if marker_matches(dest, uri, None):
        return
    import huggingface_hub

    stage = open_stage(dest, uri)
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
        rmtree(tree / ".cache")  # huggingface_hub's download metadata, not data
    if not root.is_dir() or not any(p.is_file() for p in root.rglob("*")):
        where = f"under {repo.subdir!r} " if repo.subdir else ""
        raise DownloadError(f"{uri}: no files {where}in {repo.repo_id}")
    install_tree(root, dest, make_marker(uri, None))
    rmtree(stage)
