"""A run asks DVC for the whole DAG's status once (`RunStatus`), then skips unchanged stages
without a `dvc status` per stage; a stage downstream of one that ran is asked about again.

A three-stage DVC project (a -> b -> c, shell commands; its knobs in knobs.yaml, as the
project has no videorft params.yaml) keeps this fast; the real pipeline's
skipping is covered end to end in test_pipeline_e2e.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import record_dvc_calls
from videorft.pipeline import command, runner
from videorft.pipeline import status as status_mod
from videorft.pipeline.runner import repro_stage
from videorft.pipeline.status import RunStatus, pipeline_status
from videorft.stages import upstream_map

DVC_YAML = """\
stages:
  a:
    cmd: python -c "open('a.txt', 'w').write('a')"
    outs: [a.txt]
  b:
    cmd: python b.py
    deps: [a.txt, b.py]
    params: [{knobs.yaml: [b.n]}]
    outs: [b.txt]
  c:
    cmd: python -c "open('c.txt', 'w').write(open('b.txt').read() + 'c')"
    deps: [b.txt]
    outs: [c.txt]
"""
B_PY = """\
import yaml

n = yaml.safe_load(open("knobs.yaml"))["b"]["n"]
open("b.txt", "w").write(open("a.txt").read() + str(n))
"""
STAGES = ("a", "b", "c")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "dvc.yaml").write_text(DVC_YAML)
    (proj / "knobs.yaml").write_text("b:\n  n: 1\n")
    (proj / "b.py").write_text(B_PY)
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=proj, check=True)
    return proj


def test_status_of_the_whole_dag_in_one_dvc_call(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pipeline_status(project, STAGES) == {s: ["never run"] for s in STAGES}
    for stage in STAGES:
        assert repro_stage(project, stage).ran
    calls = record_dvc_calls(monkeypatch, status_mod, runner)
    assert pipeline_status(project, STAGES) == {s: [] for s in STAGES}
    assert [c[0] for c in calls] == ["status"]

    (project / "knobs.yaml").write_text("b:\n  n: 2\n")
    status = pipeline_status(project, STAGES)
    assert status["a"] == [] and status["c"] == []  # c's deps change only once b runs
    assert status["b"] == ["param b.n: 1 -> 2"]


def test_why_names_the_keys_that_changed_not_whole_values(project: Path) -> None:
    """A change inside a list of mappings (download.sources) names the one key; long values
    show as the key alone, and many changed keys are counted, not listed."""
    sources = [{"name": f"s{i}", "options": {"seed": i, "uri": "data/" + "x" * 40}}
               for i in range(3)]
    (project / "knobs.yaml").write_text(json.dumps({"b": {"n": sources}}))
    for stage in STAGES:
        repro_stage(project, stage)
    sources[1]["options"]["seed"] = 7
    sources[2]["options"]["uri"] = "data/" + "y" * 40
    (project / "knobs.yaml").write_text(json.dumps({"b": {"n": sources}}))
    assert pipeline_status(project, STAGES)["b"] == [
        "param b.n.1.options.seed: 1 -> 7", "param b.n.2.options.uri changed"]
    many = [{"name": f"t{i}", "options": {"seed": i}} for i in range(4)]
    (project / "knobs.yaml").write_text(json.dumps({"b": {"n": many}}))
    why = pipeline_status(project, STAGES)["b"]
    assert len(why) == status_mod.MAX_KEYS_SHOWN + 1 and why[-1] == "and 3 more keys of b.n"
    assert not any("xxxx" in line for line in why)


def test_a_run_skips_known_unchanged_stages_without_asking_dvc_again(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for stage in STAGES:
        repro_stage(project, stage)
    (project / "knobs.yaml").write_text("b:\n  n: 2\n")
    upstream = upstream_map(project)
    assert upstream == {"a": set(), "b": {"a"}, "c": {"a", "b"}}

    calls = record_dvc_calls(monkeypatch, status_mod, runner)
    run = RunStatus(project, STAGES, upstream)
    outcomes = []
    for stage in STAGES:
        outcome = repro_stage(project, stage, known_up_to_date=run.up_to_date(stage)).to_dict()
        run.record(outcome)
        outcomes.append(outcome)
    assert [o["ran"] for o in outcomes] == [False, True, True]
    assert outcomes[1]["reasons"] == ["param b.n: 1 -> 2"]
    # One status for the DAG; a skipped `a` asks nothing; b is asked about (it changed) and
    # runs; c is asked about again because b ran, and runs on b's new output.
    assert [c[:2] for c in calls] == [
        ["status", "--json"], ["status", "--json"], ["repro", "--single-item"],
        ["status", "--json"], ["repro", "--single-item"],
    ]
    assert (project / "c.txt").read_text() == "a2c"

    calls.clear()
    run = RunStatus(project, STAGES, upstream)
    assert all(run.up_to_date(stage) for stage in STAGES)
    assert not any(repro_stage(project, s, known_up_to_date=True).ran for s in STAGES)
    assert [c[0] for c in calls] == ["status"]


def test_known_up_to_date_never_hides_a_forced_or_never_run_stage(project: Path) -> None:
    outcome = repro_stage(project, "a", known_up_to_date=True)
    assert outcome.ran and outcome.reasons == ["never run"]
    forced = repro_stage(project, "a", known_up_to_date=True, force=True)
    assert forced.ran and forced.reasons == ["forced"]


def test_nothing_to_do_answers_without_a_flow_unless_a_push_is_pending(
    project: Path, tmp_path: Path
) -> None:
    from tests.conftest import ROOT
    from videorft.params import update_params
    from videorft.pipeline.runner import nothing_to_do

    assert nothing_to_do(project, STAGES) is None  # never run
    # A folder as the DVC remote (params.yaml: the project's own, for its orchestration knobs).
    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    update_params(project / "params.yaml", overrides=[f"orchestration.remote.url={tmp_path}/rem"])
    for stage in STAGES:
        assert repro_stage(project, stage).ran  # and pushed
    idle = nothing_to_do(project, STAGES)
    assert idle is not None and [o.stage for o in idle] == list(STAGES)
    assert not any(o.ran for o in idle)

    # Outputs the remote may lack (say a push failed): the run must go through the stages.
    (project / ".dvc" / "tmp" / "videorft-pushed.json").unlink()
    assert nothing_to_do(project, STAGES) is None
    for stage in STAGES:
        assert not repro_stage(project, stage, known_up_to_date=True).ran  # pushes
    assert nothing_to_do(project, STAGES) is not None

    (project / "knobs.yaml").write_text("b:\n  n: 3\n")
    assert nothing_to_do(project, STAGES) is None


def _hold_dvc_lock(project: Path, pid: int) -> None:
    """What a killed `dvc repro b` leaves: its write lock on b's output, under its PID."""
    rwlock = project / ".dvc/tmp/rwlock"
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    rwlock.write_text(json.dumps({"write": {str(project / "b.txt"): {
        "pid": pid, "cmd": "dvc repro --single-item b"}}, "read": {}}))


def test_a_killed_runs_unreaped_dvc_process_is_waited_out(project: Path) -> None:
    """A `kill -9`ed run's DVC process is a zombie until init reaps it; DVC takes its PID for a
    live lock holder. The status waits for it instead of failing the rerun (seen in CI)."""
    for stage in STAGES:
        repro_stage(project, stage)
    zombie = subprocess.Popen(["true"])  # exits at once; not reaped until wait()
    deadline = time.monotonic() + 10
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _hold_dvc_lock(project, zombie.pid)
    logged: list[str] = []

    def reap_once_waited_for() -> None:
        """init's part, late: once the rerun waits (not after a fixed delay, which a loaded
        machine's DVC start-up can outlast, so DVC would never find the lock held)."""
        deadline = time.monotonic() + 60
        while not any("held by another process" in line for line in logged):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        zombie.wait()

    reaper = threading.Thread(target=reap_once_waited_for)
    reaper.start()
    try:
        code, lines = command.dvc(["status", "--json", "b"], project, log=logged.append)
    finally:
        reaper.join()
    assert code == 0, lines
    assert any("held by another process" in line for line in logged), logged
    assert pipeline_status(project, STAGES) == {s: [] for s in STAGES}


def test_a_live_lock_holder_is_named_after_the_wait(project: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _hold_dvc_lock(project, holder.pid)
        logged: list[str] = []
        started = time.monotonic()
        code, lines = command.dvc(["status", "b"], project, log=logged.append, busy_wait_s=4.0)
        # It waited (asked again after a pause), then gave up with DVC's message naming it.
        assert any("held by another process" in line for line in logged), logged
        assert sum(f"PID {holder.pid}" in line for line in logged) >= 2, logged
        assert code != 0 and time.monotonic() - started < 30
        assert f"PID {holder.pid}" in "\n".join(lines)
    finally:
        holder.kill()
        holder.wait()


def test_stage_progress_bars_refresh_once_a_second_unless_the_user_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every line a stage prints is logged (run.log, Prefect's API), so its tqdm bars refresh
    once a second in the environment DVC runs it in, not tqdm's ten; the user's own
    TQDM_MININTERVAL wins."""
    probe = [sys.executable, "-c",
             "import io, tqdm; print(tqdm.tqdm(total=1, file=io.StringIO()).mininterval)"]

    def mininterval() -> str:
        return subprocess.run(probe, env=command._env(), capture_output=True, text=True,
                              check=True).stdout.strip()

    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    assert mininterval() == "1.0"
    monkeypatch.setenv("TQDM_MININTERVAL", "5")
    assert mininterval() == "5.0"


def test_a_status_taken_by_the_caller_is_not_taken_again(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI takes the DAG's status once, for its nothing-to-do check and for the flow."""
    from tests.conftest import ROOT
    from videorft.pipeline.runner import nothing_to_do

    (project / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for stage in STAGES:
        repro_stage(project, stage)
    status = pipeline_status(project, STAGES)
    calls = record_dvc_calls(monkeypatch, status_mod, runner)
    assert nothing_to_do(project, STAGES, status) is not None
    changed = {**status, "b": ["param b.n: 1 -> 2"]}
    assert nothing_to_do(project, STAGES, changed) is None
    run = RunStatus(project, STAGES, upstream_map(project), changed)
    assert [run.up_to_date(s) for s in STAGES] == [True, False, True]
    assert calls == []


def test_dvcs_git_hints_are_logged_in_full(tmp_path: Path, monkeypatch) -> None:
    """DVC ends every stage with the same `git add ...` and autostage advice: it goes to the
    log (reports/run.log, the Prefect UI; the terminal only under --verbose, where Prefect's
    console handler shows INFO), every line but the blank ones, and all of it is returned."""
    import io

    output = ("Running stage 'download':\n> videorft stage download\n"
              "Updating lock file 'dvc.lock'\n\nTo track the changes with git, run:\n\n"
              "\tgit add dvc.lock data/.gitignore\n\nTo enable auto staging, run:\n\n"
              "\tdvc config core.autostage true\n")

    class FakeDVC:
        def __init__(self, *args, **kwargs) -> None:
            self.stdout = io.StringIO(output)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(command.subprocess, "Popen", FakeDVC)
    shown: list[str] = []
    code, lines = command.dvc(["repro", "download"], tmp_path, log=shown.append)
    assert code == 0 and len(lines) == len(output.splitlines())
    assert shown == [line for line in output.splitlines() if line.strip()]
