"""A killed `videorft run` leaves no temporary Prefect server behind (its watchdog stops it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.test_pipeline_e2e import _env, project  # noqa: F401  (project: a fixture)
from videorft.cli import TEMPORARY_SERVER

MARK = "videorft-orphan-test-child"
PARENT = textwrap.dedent(f"""\
    import os, subprocess, sys, time
    from videorft.pipeline.orphans import watch
    sleep = [sys.executable, "-c", "import time; time.sleep(120)"]
    subprocess.Popen([*sleep, "{MARK}"])  # watched
    subprocess.Popen([*sleep, "unrelated"])  # not watched: left alone
    watch(os.getpid(), "{MARK}")
    print("ready", flush=True)
    time.sleep(120)
""")


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _matching(processes: list[psutil.Process], text: str) -> list[psutil.Process]:
    """The processes whose command line holds ``text``, the watchdogs (which name it) aside."""
    found = []
    for p in processes:
        try:
            line = " ".join(p.cmdline())
            if text in line and "videorft.pipeline.orphans" not in line:
                found.append(p)
        except psutil.Error:
            continue
    return found


def _kill_all(processes: list[psutil.Process]) -> None:
    for p in processes:
        try:
            p.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(processes, timeout=10)


def test_watchdog_stops_the_matching_children_of_a_killed_process() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    children: list[psutil.Process] = []
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        children = _descendants(parent.pid)
        watched, unrelated = _matching(children, MARK), _matching(children, "unrelated")
        assert len(watched) == 1 and len(unrelated) == 1
        time.sleep(1.5)  # the watchdog's first looks (it polls every 0.5 s)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        _wait_for(lambda: not watched[0].is_running() or
                  watched[0].status() == psutil.STATUS_ZOMBIE, 20, "the watched child to stop")
        assert unrelated[0].is_running(), "a process the watchdog was not asked about was stopped"
    finally:
        parent.kill()
        _kill_all(children)


@pytest.mark.timeout(300)
def test_a_killed_run_leaves_no_temporary_prefect_server(
    project: Path, tmp_path: Path  # noqa: F811
) -> None:
    env = _env(tmp_path)
    assert "PREFECT_API_URL" not in env
    run = subprocess.Popen([sys.executable, "-m", "videorft", "run"], cwd=project, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: list[psutil.Process] = []
    try:
        def server_started() -> bool:
            seen[:] = _descendants(run.pid)
            return bool(_matching(seen, TEMPORARY_SERVER)) or run.poll() is not None

        _wait_for(server_started, 180, "the temporary Prefect server")
        assert run.poll() is None, "the run ended before its server was seen"
        server = _matching(seen, TEMPORARY_SERVER)[0]
        time.sleep(1.5)  # the watchdog's first looks
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        _wait_for(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE,
                  30, "the temporary server to stop after the run was killed")
    finally:
        run.kill()
        _kill_all(seen + _descendants(run.pid))  # the stage DVC was running, if any
