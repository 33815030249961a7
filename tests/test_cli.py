"""The command line: params commands, clear errors, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import copy_params
from tests.servers import free_port
from videorft.cli import app
from videorft.params import load_params

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _project(tmp_path: Path) -> Path:
    copy_params(tmp_path)
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def test_params_show_presets_apply(tmp_path: Path) -> None:
    root = str(_project(tmp_path))
    shown = runner.invoke(app, ["params", "show", "--root", root])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["extract_frames"]["fps"] == 2.0
    presets = runner.invoke(app, ["params", "presets", "--root", root])
    assert presets.exit_code == 0, presets.output
    assert [line.split() for line in presets.stdout.splitlines()] == [
        ["smoke"], ["*", "tiny-cpu"], ["videochat-r1"]]
    applied = runner.invoke(
        app,
        ["params", "apply", "videochat-r1", "--set", "extract_frames.workers=4", "--root", root],
    )
    assert applied.exit_code == 0, applied.output
    shown = json.loads(runner.invoke(app, ["params", "show", "--root", root]).stdout)
    assert shown["preset"] == "videochat-r1"
    assert shown["extract_frames"]["max_frames"] == 768
    assert shown["extract_frames"]["workers"] == 4


def test_presets_lists_a_broken_preset_with_its_problem(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "configs" / "presets" / "[mine].yaml").write_text("train: {max_steps: 0}\n")
    listed = runner.invoke(app, ["params", "presets", "--root", str(root)])
    assert listed.exit_code == 1
    line = next(line for line in listed.stdout.splitlines() if "[mine]" in line)
    assert "(invalid: " in line and "max_steps" in line, line


def test_errors_are_one_clear_line_with_exit_code_1(tmp_path: Path) -> None:
    root = str(_project(tmp_path))
    bad = runner.invoke(app, ["params", "apply", "--set", "extract_frames.fsp=1", "--root", root])
    assert bad.exit_code == 1
    assert "unknown parameter 'extract_frames.fsp'" in bad.output
    assert "Traceback" not in bad.output
    empty = tmp_path.parent / f"{tmp_path.name}-empty"  # no dvc.yaml here or above
    empty.mkdir()
    elsewhere = runner.invoke(app, ["params", "show", "--root", str(empty)])
    assert elsewhere.exit_code == 1 and "no dvc.yaml" in elsewhere.output
    stage = runner.invoke(app, ["stage", "trian", "--root", root])
    assert stage.exit_code == 1 and "unknown stage 'trian'" in stage.output


def test_describe_documents_every_field() -> None:
    result = runner.invoke(app, ["params", "describe"])
    assert result.exit_code == 0
    for name in (
        "extract_frames.total_pixels",
        "build_dataset.val_fraction",
        "download.on_invalid",
    ):
        assert name in result.stdout


def test_describe_shows_the_value_in_use_and_each_presets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--in-use` and `--preset NAME` add columns: what params.yaml holds and what applying the
    preset would set; nothing is written."""
    from videorft import cli

    monkeypatch.setattr(cli.stdout, "width", 300)  # room for every column, on any terminal
    root = _project(tmp_path)
    before = (root / "params.yaml").read_bytes()
    result = runner.invoke(app, ["params", "describe", "--in-use", "--preset", "tiny-cpu",
                                 "--preset", "videochat-r1", "--root", str(root)])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "parameter" in line)
    cells = [c.strip() for c in header.split("┃") if c.strip()]
    assert cells == ["parameter", "default", "in use", "tiny-cpu", "videochat-r1", "meaning"]
    row = next(line for line in result.stdout.splitlines() if "│ train.learning_rate " in line)
    in_use = load_params(root / "params.yaml").train.learning_rate
    assert [c.strip() for c in row.split("│") if c.strip()][1:5] == [
        "1e-06", repr(in_use), "0.0001", "1e-06"]
    every = runner.invoke(app, ["params", "describe", "--all-presets", "--root", str(root)])
    header = next(line for line in every.stdout.splitlines() if "parameter" in line)
    assert [c.strip() for c in header.split("┃") if c.strip()] == [
        "parameter", "default", "smoke", "tiny-cpu", "videochat-r1", "meaning"]
    assert (root / "params.yaml").read_bytes() == before
    assert "unknown preset 'nope'" in _one_error_line(runner.invoke(
        app, ["params", "describe", "--preset", "nope", "--root", str(root)]))


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_bad_overrides_are_one_line_errors_and_change_nothing(tmp_path: Path) -> None:
    """Each class of bad --set, refused at apply time in one line; params.yaml untouched."""
    root = _project(tmp_path)
    before = (root / "params.yaml").read_bytes()
    cases = {
        "download.sources.5.name=x": "download.sources has 3 entries (0 to 2); there is no entry 5",
        "extract_frames.fps=[unclosed": "'extract_frames.fps=[unclosed': the value is not valid",
        "extract_frames.min_frames=20": "min_frames (20) must not exceed max_frames (16)",
        "extract_frames.min_pixels=99999999": "must not exceed max_pixels",
        "train.learning_rate=.nan": "train.learning_rate: Input should be a finite number",
        "warm_start.learning_rate=.inf": "warm_start.learning_rate: Input should be a finite",
        "train.max_steps=0": "max_steps must be positive, or -1",
        "train.per_device_train_batch_size=6": "(6) must be a multiple of num_generations (8)",
        "download.sources.0.name=../../x": "'../../x' must be a plain folder name",
        "download.sources.0.name=/abs": "'/abs' must be a plain folder name",
        "paths.raw=../outside": "paths.raw: '../outside' must be a relative path inside",
        "paths.frames=/tmp/frames": "paths.frames: '/tmp/frames' must be a relative path",
        "build_dataset.tasks=[/bold]": "build_dataset.tasks.0: unknown task '/bold'",
    }
    for override, message in cases.items():
        line = _one_error_line(runner.invoke(
            app, ["params", "apply", "--set", override, "--root", str(root)]))
        assert message in line, (override, line)
    assert (root / "params.yaml").read_bytes() == before


def test_user_text_in_errors_and_tables_is_never_markup(tmp_path: Path) -> None:
    """File names, ids and task names print literally, brackets included."""
    predictions = tmp_path / "[b]p.jsonl"
    predictions.write_text(json.dumps({"id": "[bold]1", "task": "[/bold]", "completion": "a",
                                       "solution": [0, 1]}) + "\n")
    line = _one_error_line(runner.invoke(app, ["score", str(predictions)]))
    assert "[b]p.jsonl" in line and "'[bold]1'" in line and "'[/bold]'" in line
    predictions.write_text(json.dumps({"id": "[red]a[/red]", "task": "mcq",
                                       "completion": "<answer>B</answer>",
                                       "solution": "B"}) + "\n")
    table = runner.invoke(app, ["score", str(predictions), "--no-think"])
    assert table.exit_code == 0, table.output
    assert "mcq" in table.output


def test_status_and_run_with_a_corrupt_lock_or_no_params_are_one_line(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: [\n  broken")
    line = _one_error_line(runner.invoke(app, ["status", "--root", str(root)]))
    assert "dvc.lock: not valid YAML" in line and "git checkout dvc.lock" in line
    line = _one_error_line(runner.invoke(app, ["run", "--root", str(root)]))
    assert "dvc.lock: not valid YAML" in line  # `run` reads the lock before starting Prefect
    (root / "dvc.lock").write_text("- just\n- a list\n")
    line = _one_error_line(runner.invoke(app, ["status", "--root", str(root)]))
    assert "dvc.lock: not a DVC lock file" in line
    line = _one_error_line(runner.invoke(app, ["run", "--root", str(root)]))
    assert "dvc.lock: not a DVC lock file" in line
    (root / "dvc.lock").unlink()
    (root / "params.yaml").unlink()
    line = _one_error_line(runner.invoke(app, ["status", "--root", str(root)]))
    assert "params.yaml: not found" in line


def test_a_stage_exits_75_only_when_a_retry_may_help(tmp_path: Path, monkeypatch) -> None:
    """`videorft stage` (what dvc.yaml runs) exits with EXIT_TRANSIENT for a network failure
    and 1 for bad input, and repro_stage reads DVC's report of that status."""
    from videorft.download import http as http_source
    from videorft.errors import EXIT_TRANSIENT
    from videorft.pipeline import runner as stage_runner

    monkeypatch.setattr(http_source, "RETRY_BACKOFF_S", 0.0)
    root = _project(tmp_path)
    port = free_port()  # connection refused
    apply = ["params", "apply", "--root", str(root), "--set",
             f"download.sources=[{{name: web, type: charades_sta, uri: "
             f"'http://127.0.0.1:{port}/set.zip', annotation: a.txt}}]"]
    assert runner.invoke(app, apply).exit_code == 0
    refused = runner.invoke(app, ["stage", "download", "--root", str(root)])
    assert refused.exit_code == EXIT_TRANSIENT, refused.output
    local = [*apply[:-1], "download.sources=[{name: disk, type: charades_sta, uri: "
             "'no-such-folder', annotation: a.txt}]"]
    assert runner.invoke(app, local).exit_code == 0
    missing = runner.invoke(app, ["stage", "download", "--root", str(root)])
    assert missing.exit_code == 1, missing.output

    def fake_dvc(args, project, log=None):
        return 1, ["ERROR: failed to reproduce 'download': failed to run: videorft stage "
                   f"download, exited with {EXIT_TRANSIENT}"]

    monkeypatch.setattr(stage_runner, "dvc", fake_dvc)
    monkeypatch.setattr(stage_runner, "stage_status", lambda *a, **k: ["changed"])
    with pytest.raises(stage_runner.StageError) as info:
        stage_runner.repro_stage(root, "download", force=True)
    assert info.value.transient


@pytest.mark.parametrize(("lines", "reason"), [
    (["Running stage 'download':", "error: a.txt: line 3: bad span",
      "ERROR: failed to reproduce 'download': failed to run: videorft stage download, "
      "exited with 1"], "a.txt: line 3: bad span"),
    (["Traceback (most recent call last):", '  File "x.py", line 1, in <module>',
      "torch.OutOfMemoryError: CUDA out of memory", "ERROR: failed to reproduce 'train'"],
     "torch.OutOfMemoryError: CUDA out of memory"),
    (["ERROR: failed to reproduce 'train': exited with -9"],
     "failed to reproduce 'train': exited with -9"),
    (["Running stage 'train':"], "dvc repro exited with 255 and gave no error line"),
])
def test_a_failed_stage_is_reported_by_its_own_error_line(lines: list[str], reason: str,
                                                          tmp_path: Path, monkeypatch) -> None:
    """repro_stage's error is one line: the stage's own error, else the exception, else DVC's;
    called without a log, it carries the output too (nobody saw it)."""
    from videorft.pipeline import runner as stage_runner

    monkeypatch.setattr(stage_runner, "dvc", lambda *a, **k: (255, lines))
    monkeypatch.setattr(stage_runner, "stage_status", lambda *a, **k: ["changed"])
    root = _project(tmp_path)
    with pytest.raises(stage_runner.StageError) as info:
        stage_runner.repro_stage(root, "train", force=True, log=lambda line: None)
    assert str(info.value) == f"stage 'train' failed: {reason}"
    with pytest.raises(stage_runner.StageError) as info:
        stage_runner.repro_stage(root, "train", force=True)
    assert str(info.value) == f"stage 'train' failed: {reason}\n" + "\n".join(lines)


EXIT_PROBE = """
import atexit, sys, threading, time
from pathlib import Path
from videorft import cli

out = Path(sys.argv[1])
atexit.register(lambda: out.write_text("exit handlers ran"))
if sys.argv[2] == "busy":  # a non-daemon thread still working: the normal exit waits for it
    threading.Thread(target=time.sleep, args=(0.5,)).start()
print("stage done", flush=False)  # left in the buffer: the exit must flush it
cli._exit_skipping_teardown()
print("normal exit")
"""


@pytest.mark.parametrize("busy", [False, True])
def test_a_stage_process_exits_without_teardown_but_runs_its_exit_handlers(
    tmp_path: Path, busy: bool
) -> None:
    """`videorft stage` ends its process at once after its summary (a torch process's teardown
    costs 1-2 s a stage), yet flushes its output and runs the exit handlers; with work still
    running in a non-daemon thread it exits normally instead."""
    import subprocess
    import sys

    marker = tmp_path / "marker.txt"
    done = subprocess.run([sys.executable, "-c", EXIT_PROBE, str(marker),
                           "busy" if busy else "idle"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "exit handlers ran"
    expected = ["stage done", "normal exit"] if busy else ["stage done"]
    assert done.stdout.splitlines() == expected


def test_only_the_stage_command_process_itself_exits_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In-process callers (tests, notebooks) are never ended by a stage that succeeds."""
    from videorft.cli import _started_for_one_stage

    for argv, expected in [
        (["/venv/bin/videorft", "stage", "evaluate"], True),
        (["/repo/videorft/__main__.py", "stage", "train"], True),
        (["/venv/bin/videorft", "run"], False),
        (["/venv/bin/pytest", "stage"], False),
        (["/venv/lib/pytest/__main__.py", "stage"], False),
        ([], False),
    ]:
        monkeypatch.setattr("sys.argv", argv)
        assert _started_for_one_stage() is expected, argv
