"""Prefect task behaviour that the stages cannot show: which failures are retried.

Runs a real flow (temporary Prefect server, in a subprocess with its own PREFECT_HOME) around
the `publish` and `download` tasks, with the DVC call replaced by a failure of the kind under
test: only a transient one (the stage exited with EXIT_TRANSIENT) is retried.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Imported here, not in the test: importing Prefect sets up its logging, replacing the root
# handlers, pytest's capture included.
from tasks.stages import StageProgress, log_level

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from pathlib import Path

import pytest
from prefect import flow
import tasks.stages as stages

root = Path(sys.argv[1])
calls = []

def failing_run(stage, project, force, up_to_date=False):
    calls.append(stage)
    # What repro_stage raises: transient when the stage exited with EXIT_TRANSIENT, and with
    # the stage's summary line when it printed one (a failed gate prints its verdict).
    verdict = {"published": False, "gate": {"failures": ["s/tracking ao: 0.1 < 0.2", "two"]}}
    raise stages.StageError(f"stage {stage!r} failed: the stage's own error line",
                            transient=mode == "network",
                            summary=verdict if mode == "gate" else None)

stages._run = failing_run

@flow
def one_stage(name):
    return getattr(stages, name).with_options(retry_delay_seconds=0)(str(root))

for name, mode in (("publish", "gate"), ("publish", "network"), ("publish", "bad input"),
                   ("download", "network"), ("download", "bad input")):
    calls.clear()
    try:
        one_stage(name)
    except Exception as exc:
        print(name, mode, "raised", type(exc).__name__, "calls", len(calls))
        if mode == "gate":
            print("gate message:", repr(str(exc)))
"""


def test_only_transient_failures_are_retried(tmp_path: Path) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    lines = result.stdout
    assert "publish gate raised GateFailed calls 1" in lines, output  # a verdict: no retry
    # The verdict in one line (Prefect logs it for the task and the flow, the CLI prints it):
    # the failures, not the stage's whole output again.
    assert ("gate message: 'publish gate failed, nothing was published (2 failures): "
            "s/tracking ao: 0.1 < 0.2; two'") in lines, output
    assert "publish network raised StageError calls 3" in lines, output  # 1 + 2 retries
    assert "publish bad input raised StageError calls 1" in lines, output
    assert "download network raised StageError calls 4" in lines, output  # 1 + 3 retries
    assert "download bad input raised StageError calls 1" in lines, output  # fails at once


def test_long_stages_report_their_progress_bars_by_quarters(caplog) -> None:
    """tqdm refreshes as DVC streams them (every refresh is a line): the progress line gets
    25/50/75%, once each, per bar."""
    bars = StageProgress("train")
    with caplog.at_level("INFO", logger="videorft.progress"):
        for step in range(0, 2401, 50):
            bars(f"{100 * step // 2400:3d}%|####   | {step}/2400 [00:01<00:05,  8.6it/s]")
            bars("Saving: 100%|#####| 1/1 [00:00<00:00, 9.1it/s]")  # another bar, interleaved
        bars("extract_frames:  60%|######| 760/1264 [00:03<00:02, 211.9video/s]")
        bars("{'loss': '0.3', 'epoch': '1/2'}")  # no bar
    assert [r.getMessage().split(None, 1)[1] for r in caplog.records] == [
        "25% (600/2400)", "50% (1200/2400)", "75% (1800/2400)", "50% (760/1264)"]


def test_progress_updates_carry_the_bar_and_the_latest_reward(caplog) -> None:
    """Between the quarter lines, DEBUG updates (for the live table) at most every
    UPDATE_EVERY_S, each with the stage's facts: bar position and the trainer's last reward."""
    now = [0.0]
    bars = StageProgress("train", clock=lambda: now[0])
    with caplog.at_level("DEBUG", logger="videorft.progress"):
        bars("{'loss': '0.1', 'reward': '1.25', 'kl': '0.002'}")
        for step in range(1, 11):
            now[0] += 0.3
            bars(f"{10 * step}%|#   | {step}/10 [00:01<00:05,  8.6it/s]")
    facts = [(r.levelname, r.done) for r in caplog.records]
    # 0.3 s apart: an update where 0.5 s have passed since the last record, the quarters
    # (and only they) at INFO.
    assert facts == [("DEBUG", 2), ("INFO", 3), ("INFO", 5), ("DEBUG", 7), ("INFO", 8),
                     ("DEBUG", 10)]
    assert {(r.total, r.metric) for r in caplog.records} == {(10, "reward 1.25")}
    assert {r.stage for r in caplog.records} == {"train"}


@pytest.mark.parametrize(("line", "level"), [
    ("/x/videorft/trainer/grpo.py:12: UserWarning: torch.compile is off", "WARNING"),
    ("  FutureWarning: `torch_dtype` is deprecated", "WARNING"),
    ("WARNING: 'data/raw' is empty.", "WARNING"),
    ("ERROR: failed to reproduce 'download': exited with 1", "WARNING"),
    ("error: data/records.jsonl: line 3: unknown task '[/bold]'", "WARNING"),
    ("Running stage 'train':", "INFO"),
    ("> videorft stage train", "INFO"),
    ("train: 25%|##   | 600/2400 [00:01<00:05,  8.6it/s]", "INFO"),
    ("{'loss': '0.3', 'reward': 1.2}", "INFO"),
    ("no errors in 32 videos", "INFO"),
])
def test_warnings_and_errors_of_a_stage_reach_the_terminal(line: str, level: str) -> None:
    """Prefect's console shows WARNING and up without --verbose: a stage's warnings and errors
    are logged at that level, the rest at INFO (log file and UI)."""
    import logging

    assert logging.getLevelName(log_level(line)) == level
