"""The command line: params commands, clear errors, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from videorft.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _project(tmp_path: Path) -> Path:
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_params_show_presets_apply(tmp_path: Path) -> None:
    root = str(_project(tmp_path))
    shown = runner.invoke(app, ["params", "show", "--root", root])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["extract_frames"]["fps"] == 2.0
    presets = runner.invoke(app, ["params", "presets", "--root", root])
    assert presets.stdout.split() == ["*", "tiny-cpu", "smoke", "videochat-r1"]
    applied = runner.invoke(
        app,
        ["params", "apply", "videochat-r1", "--set", "extract_frames.workers=4", "--root", root],
    )
    assert applied.exit_code == 0, applied.output
    shown = json.loads(runner.invoke(app, ["params", "show", "--root", root]).stdout)
    assert shown["preset"] == "videochat-r1"
    assert shown["extract_frames"]["max_frames"] == 768
    assert shown["extract_frames"]["workers"] == 4


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
