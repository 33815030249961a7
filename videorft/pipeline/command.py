"""The one door to the DVC CLI: every DVC command of a checkout goes through `dvc`, serialised.

Two DVC commands in one checkout collide on DVC's repository lock, and two pipeline runs would
trample each other's outputs, so every DVC call here takes a file lock (`checkout_lock`), and a
whole run takes a second, non-blocking one (`run_lock`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from videorft.errors import VideoRFTError

Log = Callable[[str], None]


def find_root(start: str | os.PathLike = ".") -> Path:
    """The project root: the nearest folder upwards holding dvc.yaml."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    raise VideoRFTError(f"no dvc.yaml in {here} or its parents: run videorft in a project checkout")


def lock_dir(root: Path) -> Path:
    """Where the checkout's locks live (``.dvc/tmp``, which DVC keeps out of git)."""
    path = root / ".dvc" / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkout_lock(root: Path) -> FileLock:
    """The lock every DVC call in the checkout takes; whoever rewrites dvc.lock outside DVC
    takes it too, so no DVC command reads the file half-changed. Never call `dvc` holding it."""
    return FileLock(str(lock_dir(root) / "videorft-dvc.lock"))


#: Seconds between two refreshes of a stage's progress bars (tqdm's own default: 0.1). Each
#: refresh is a line of the stage's output, read here and logged (run.log, Prefect's API):
#: ten a second cost the default run seconds of CPU on 2 cores, for a view no finer than a
#: second. The ``TQDM_MININTERVAL`` environment variable, when set, wins.
PROGRESS_REFRESH_S = "1"


def _env() -> dict[str, str]:
    """The environment DVC runs stage commands in: this interpreter's scripts first on PATH,
    progress bars refreshed once a second."""
    env = os.environ.copy()
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("TQDM_MININTERVAL", PROGRESS_REFRESH_S)
    return env


#: DVC's message when another process holds its read/write lock on a stage's paths.
_BUSY = "is busy, it is being blocked by"
#: How long a DVC call waits for such a holder to go away before it gives up.
BUSY_WAIT_S = 20.0


def dvc(args: list[str], root: Path, *, log: Log | None = None,
        busy_wait_s: float | None = None) -> tuple[int, list[str]]:
    """Run `dvc ARGS` in `root` under the checkout's DVC lock; stream and return its output.

    DVC counts a process in its rwlock as alive while its PID exists, and a killed run's DVC
    process lingers as a zombie until init reaps it, so a rerun right after a `kill -9` can
    find the stage "busy". Such a call is retried (it failed before touching anything) for up
    to ``busy_wait_s`` seconds; a holder that really works on (a `dvc repro` by hand) then
    gets DVC's own message, which names it.
    """
    wait_s = BUSY_WAIT_S if busy_wait_s is None else busy_wait_s
    deadline = time.monotonic() + wait_s
    delay = 0.25
    while True:
        code, lines = _dvc_once(args, root, log)
        busy = code != 0 and any(_BUSY in line for line in lines)
        if not busy or time.monotonic() + delay > deadline:
            return code, lines
        if log is not None and delay == 0.25:
            log(f"DVC's lock on this stage is held by another process; waiting up to "
                f"{wait_s:.0f} s for it to exit")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _dvc_once(args: list[str], root: Path, log: Log | None) -> tuple[int, list[str]]:
    lines: list[str] = []
    with checkout_lock(root):
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", *args],
            cwd=root,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if log is not None and line.strip():
                log(line)
        return proc.wait(), lines


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Refuse a second pipeline run in the same checkout instead of corrupting the first."""
    lock = FileLock(str(lock_dir(root) / "videorft-run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise VideoRFTError(
            f"another videorft run is in progress in {root}; wait for it to finish and try "
            "again (the lock is released as soon as that process exits)"
        ) from None
    try:
        yield
    finally:
        lock.release()
