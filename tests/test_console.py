"""The live stage table of `videorft run` on a terminal (videorft.console.StageBoard)."""

from __future__ import annotations

import logging

from rich.console import Console

from videorft.console import StageBoard


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _render(board: StageBoard) -> list[str]:
    console = Console(width=120, record=True, force_terminal=False, color_system=None)
    console.print(board)
    return [" ".join(line.split()) for line in console.export_text().splitlines()]


def test_the_board_shows_state_elapsed_progress_and_reward_per_stage() -> None:
    clock = Clock()
    board = StageBoard(["download", "train", "evaluate"], clock=clock)
    log = logging.getLogger("test.console.board")
    log.propagate, log.handlers = False, [board]
    log.setLevel(logging.DEBUG)

    def report(stage: str, state: str, **facts) -> None:
        log.debug("%s %s", stage, state, extra={"stage": stage, "state": state, **facts})

    report("download", "running")
    clock.now += 2.5
    report("download", "ran", seconds=2.5)
    report("train", "running")
    log.info("a record without stage facts is ignored")
    clock.now += 30.0
    report("train", "running", done=1200, total=2400, metric="reward 1.5")
    report("train", "running", done=1, total=1)  # a short bar in between: not shown
    rows = _render(board)
    assert rows[0].split() == ["stage", "state", "elapsed", "progress"]
    assert rows[1] == "download ran 2.5 s"
    assert rows[2].startswith("train running 30.0 s") and rows[2].endswith("1200/2400 reward 1.5")
    assert rows[3] == "evaluate waiting"
    clock.now += 5.0  # elapsed ticks while the stage runs, without a new record
    assert _render(board)[2].startswith("train running 35.0 s")
    report("train", "failed")
    assert _render(board)[2].startswith("train failed 35.0 s")
