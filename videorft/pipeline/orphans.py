"""A watchdog that stops a run's helper processes when the run itself is killed.

`videorft run` without ``PREFECT_API_URL`` gets a temporary Prefect server: a child process
that Prefect stops from an ``atexit`` hook. A run killed with SIGKILL (or any signal Python
does not turn into an exception) never runs that hook, and the server lives on, holding a port
and its database. The watchdog is a small separate process, in its own session so that a
signal to the run's process group does not reach it: it notes the run's descendants whose
command line contains a given text, and once the run is gone it terminates the ones still
alive (SIGTERM, then SIGKILL after a grace period) and exits. On a normal exit the run has
already stopped them, so it finds nothing to do.

Run as ``python -m videorft.pipeline.orphans PID TEXT``; :func:`watch` starts one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

#: How often the watchdog looks at the run's descendants, in seconds.
POLL_S = 0.5
#: How long a terminated process has to exit before it is killed, in seconds.
GRACE_S = 5.0


def watch(pid: int, match: str) -> subprocess.Popen[bytes]:
    """Start a watchdog over process ``pid``'s descendants whose command line holds ``match``."""
    return subprocess.Popen(
        [sys.executable, "-m", "videorft.pipeline.orphans", str(pid), match],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _matching(parent: psutil.Process, match: str) -> dict[int, psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for child in parent.children(recursive=True):
        if child.pid == os.getpid():  # the watchdog's own command line holds the text too
            continue
        try:
            if match in " ".join(child.cmdline()):
                found[child.pid] = child
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop(processes: list[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM each process, then SIGKILL what is still alive after ``grace_s``. psutil checks
    each process's start time first, so a reused PID is never signalled."""
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue


def run(pid: int, match: str, poll_s: float = POLL_S) -> None:
    """Note ``pid``'s matching descendants until ``pid`` is gone, then stop them."""
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, psutil.Process] = {}
    while True:
        try:
            if parent.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped
                break
            seen.update(_matching(parent, match))
        except psutil.NoSuchProcess:
            break
        time.sleep(poll_s)
    stop([p for p in seen.values() if p.is_running()])


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2])
