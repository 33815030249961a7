"""A DVC remote for stage outputs: push them after a stage, pull them instead of recomputing.

The remote comes from ``params.orchestration.remote`` and is written to ``.dvc/config.local``
(git-ignored, per checkout) as the default remote ``videorft``: only its url and endpoint.
Credentials never reach a config file: DVC's S3 client reads them from the AWS environment.

DVC moves only *cached* outputs through a remote; every output in dvc.yaml is cached, reports
included. Should a stage still be changed after a pull (an output DVC could not bring back),
``repro_stage`` runs it (see ``pull_stage``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from configobj import ConfigObj

from videorft.errors import ConfigError, StageError, VideoRFTError
from videorft.io import atomic_write_json, read_json
from videorft.params import RemoteParams, load_params
from videorft.pipeline.command import Log, dvc

REMOTE = "videorft"
#: `dvc status` states of a missing output that a pull can restore (anything else, such as a
#: changed dependency or param or a modified output, means the remote holds stale outputs).
PULLABLE = frozenset({"deleted", "not in cache"})
_PUSHED = "videorft-pushed.json"  # in .dvc/tmp: which stage outputs this remote already has


def remote_settings(root: Path) -> RemoteParams | None:
    """The remote from ``root/params.yaml``, or None when none is set (or no params.yaml)."""
    path = Path(root) / "params.yaml"
    if not path.exists():
        return None
    remote = load_params(path).orchestration.remote
    return remote if remote.url else None


def remote_url(root: Path, remote: RemoteParams) -> str:
    """The url as DVC should store it: a relative folder is taken relative to the project."""
    url = str(remote.url).strip()
    if not url:
        raise ConfigError("params.yaml: orchestration.remote.url is empty (use null for none)")
    if "://" in url:
        return url.rstrip("/")
    folder = Path(url).expanduser()
    return str(folder if folder.is_absolute() else (Path(root) / folder).resolve())


def _configured(root: Path) -> tuple[str | None, str | None, bool]:
    """(url, endpointurl, is default) of remote ``videorft`` in .dvc/config.local."""
    path = Path(root) / ".dvc" / "config.local"
    if not path.exists():
        return None, None, False
    try:
        config = ConfigObj(str(path))
    except Exception as exc:  # configobj raises several parse error types
        raise VideoRFTError(f"{path}: not a valid DVC config ({exc})") from None
    section = config.get(f'remote "{REMOTE}"') or {}
    default = (config.get("core") or {}).get("remote") == REMOTE
    return section.get("url"), section.get("endpointurl"), default


def _check(result: tuple[int, list[str]], what: str) -> None:
    code, lines = result
    if code != 0:
        tail = "\n".join(lines[-15:])
        raise VideoRFTError(f"{what} failed (dvc exit {code}):\n{tail}")


def configure_remote(
    root: Path, remote: RemoteParams | None, *, log: Log | None = None
) -> str | None:
    """Make DVC remote ``videorft`` (the default, in .dvc/config.local) match ``remote``;
    remove it when ``remote`` is None or has no url. Idempotent: no DVC call when it already
    matches. Returns the configured url (None: no remote)."""
    root = Path(root)
    url = remote_url(root, remote) if remote is not None and remote.url else None
    current_url, current_endpoint, is_default = _configured(root)
    if url is None:
        if current_url is not None:
            _check(
                dvc(["remote", "remove", "--local", REMOTE], root, log=log),
                f"removing DVC remote {REMOTE!r} from {root / '.dvc/config.local'}",
            )
        return None
    assert remote is not None
    endpoint = remote.endpoint_url or None
    if (current_url, current_endpoint, is_default) == (url, endpoint, True):
        return url
    where = f"setting DVC remote {REMOTE!r} ({url}) in {root / '.dvc/config.local'}"
    # --force replaces the whole section, so an endpoint dropped from params goes away too.
    _check(
        dvc(["remote", "add", "--local", "--force", "--default", REMOTE, url], root, log=log), where
    )
    if endpoint:
        _check(
            dvc(["remote", "modify", "--local", REMOTE, "endpointurl", endpoint], root, log=log),
            where,
        )
    return url


def pullable(status: list[Any]) -> bool:
    """Whether a stage's `dvc status --json` entries say only that outputs are missing: then
    the outputs recorded in dvc.lock are the right ones and the remote may have them. A changed
    command, dependency or param means they are stale: the stage must run."""
    if not status:
        return False
    for entry in status:
        if not isinstance(entry, dict) or set(entry) != {"changed outs"}:
            return False
        outs = entry["changed outs"]
        if not isinstance(outs, dict) or not set(outs.values()) <= PULLABLE:
            return False
    return True


def pull_stage(root: Path, stage: str, url: str, *, log: Log | None = None) -> str:
    """`dvc pull` the stage's outputs. Never raises for a remote that lacks them (or fails):
    the caller rechecks the stage and runs it if it is still changed. Returns what happened."""
    if log is not None:
        log(f"{stage}: pulling its outputs from DVC remote {REMOTE!r} ({url})")
    code, lines = dvc(["pull", "--remote", REMOTE, stage], Path(root), log=log)
    if code == 0:
        return f"pulled from remote {url}"
    errors = [line.strip() for line in lines if line.strip().startswith(("ERROR", "WARNING"))]
    return f"pull from remote {url} incomplete ({errors[-1] if errors else f'exit {code}'})"


def push_stage(root: Path, stage: str, url: str, *, log: Log | None = None) -> None:
    """`dvc push` the stage's cached outputs; a failure is a StageError naming the remote."""
    if log is not None:
        log(f"{stage}: pushing its outputs to DVC remote {REMOTE!r} ({url})")
    code, lines = dvc(["push", "--remote", REMOTE, stage], Path(root), log=log)
    if code != 0:
        tail = "\n".join(lines[-15:])
        raise StageError(
            f"stage {stage!r}: pushing its outputs to DVC remote {REMOTE!r} ({url}) failed "
            f"(dvc push exit {code}). The outputs are fine locally and dvc.lock is up to date; "
            f"the next run pushes them again (or run `dvc push -r {REMOTE} {stage}`):\n{tail}"
        )


def outs_digest(locked: dict[str, Any]) -> str:
    """A digest of the outputs a stage's dvc.lock entry records."""
    text = json.dumps(locked.get("outs", []), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _pushed_path(root: Path) -> Path:
    return Path(root) / ".dvc" / "tmp" / _PUSHED


def _pushed(root: Path) -> dict[str, dict[str, str]]:
    path = _pushed_path(root)
    try:
        data = read_json(path) if path.exists() else {}
    except Exception:  # a damaged marker only costs a push
        return {}
    return data if isinstance(data, dict) else {}


def in_remote(root: Path, url: str, stage: str, locked: dict[str, Any]) -> bool:
    """Whether this checkout already pushed (or pulled) these outputs of `stage` to `url`.
    Kept so an up-to-date stage whose push failed, or that ran before the remote was set, is
    pushed on the next run, without a `dvc push` per stage on every run."""
    return _pushed(root).get(url, {}).get(stage) == outs_digest(locked)


def mark_in_remote(root: Path, url: str, stage: str, locked: dict[str, Any]) -> None:
    data = _pushed(root)
    data.setdefault(url, {})[stage] = outs_digest(locked)
    atomic_write_json(_pushed_path(root), data)
