"""Prefect task behaviour that the stages cannot show: which failures are retried.

Runs a real flow (temporary Prefect server, in a subprocess with its own PREFECT_HOME) around
the `publish` task, with the DVC call replaced by a failure of the kind under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from pathlib import Path
from prefect import flow
import tasks.stages as stages

root = Path(sys.argv[1])
calls = []

def failing_run(stage, project, force, up_to_date=False):
    calls.append(stage)
    if mode == "gate":  # what the publish stage leaves when its gate says no
        (root / "reports").mkdir(exist_ok=True)
        (root / "reports/publish.json").write_text(json.dumps({"published": False}))
    raise stages.StageError("stage 'publish' failed (dvc repro exit 255)")

stages._run = failing_run

@flow
def publish_only():
    return stages.publish.with_options(retry_delay_seconds=0)(str(root))

for mode in ("gate", "upload"):
    calls.clear()
    try:
        publish_only()
    except Exception as exc:
        print(mode, "raised", type(exc).__name__, "calls", len(calls))
    (root / "reports/publish.json").unlink(missing_ok=True)
"""


def test_publish_retries_uploads_but_not_a_failed_gate(tmp_path: Path) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert "gate raised GateFailed calls 1" in result.stdout, output  # a verdict: no retry
    assert "upload raised StageError calls 3" in result.stdout, output  # 1 + 2 retries
