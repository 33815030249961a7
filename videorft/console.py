"""The live table `videorft run` shows on a terminal: one row per stage, redrawn in place.

The stages report through the ``videorft.progress`` logger (see ``tasks/stages.py``); each
record carries the stage's facts in its ``extra``: ``stage``, ``state`` (running, ran,
skipped, pulled, failed) and, while a long stage runs, ``done``/``total`` of its progress bar
and the trainer's latest ``metric`` (reward in GRPO, loss in the warm start), or ``seconds``
when it ends. :class:`StageBoard` is a logging handler that keeps those facts and renders them
as a rich table; :func:`live_board` shows it with ``rich.live.Live`` for the length of a run.
Off a terminal (CI, a pipe) the run prints one line per event instead, and the full log is in
reports/run.log either way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

#: How a finished stage's state reads in the table.
DONE_STATES = {"ran": "ran", "skipped": "up to date", "pulled": "pulled", "failed": "failed"}
STATE_STYLES = {"running": "yellow", "ran": "green", "up to date": "dim", "pulled": "cyan",
                "failed": "bold red", "waiting": "dim"}


@dataclass
class StageRow:
    """What the table shows of one stage."""

    state: str = "waiting"
    started: float | None = None
    seconds: float | None = None
    done: int | None = None
    total: int | None = None
    metric: str | None = None

    def elapsed(self, now: float) -> float | None:
        if self.seconds is not None:
            return self.seconds
        return None if self.started is None else now - self.started


class StageBoard(logging.Handler):
    """A logging handler that keeps each stage's latest facts and renders them as a table."""

    def __init__(self, stages: Sequence[str], clock=time.monotonic) -> None:
        super().__init__(level=logging.DEBUG)
        self.clock = clock
        self.rows = {stage: StageRow() for stage in stages}
        self._lock = threading.Lock()  # Prefect runs tasks in worker threads

    def emit(self, record: logging.LogRecord) -> None:
        stage, state = getattr(record, "stage", None), getattr(record, "state", None)
        if stage is None or state is None:
            return
        with self._lock:
            row = self.rows.setdefault(stage, StageRow())
            if state == "running":
                if row.state != "running":
                    row.state, row.started = "running", self.clock()
                done, total = getattr(record, "done", None), getattr(record, "total", None)
                # A stage's bars interleave (a save, an evaluation pass): show its longest.
                if total is not None and (row.total is None or total >= row.total):
                    row.done, row.total = done, total
                metric = getattr(record, "metric", None)
                if metric is not None:
                    row.metric = metric
            else:
                row.state = DONE_STATES.get(state, state)
                seconds = getattr(record, "seconds", None)
                if seconds is None and row.started is not None:
                    seconds = self.clock() - row.started
                row.seconds = seconds

    def table(self) -> Table:
        """The stages as they stand now (elapsed times tick while a stage runs)."""
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for column in ("stage", "state", "elapsed", "progress", ""):
            table.add_column(column, no_wrap=True)
        now = self.clock()
        with self._lock:
            rows = list(self.rows.items())
        for stage, row in rows:
            elapsed = row.elapsed(now)
            bar: ProgressBar | Text = Text("")
            count = ""
            if row.total:
                done = row.total if row.state == "ran" else row.done or 0
                bar = ProgressBar(total=row.total, completed=done, width=24)
                count = f"{done}/{row.total}"
            detail = " ".join(part for part in (count, row.metric or "") if part)
            table.add_row(
                Text(stage), Text(row.state, style=STATE_STYLES.get(row.state, "")),
                Text("" if elapsed is None else f"{elapsed:6.1f} s"), bar, Text(detail),
            )
        return table

    def __rich__(self) -> Table:
        return self.table()


@contextmanager
def live_board(stages: Sequence[str], console: Console) -> Iterator[StageBoard]:
    """Show a :class:`StageBoard` of ``stages`` live on ``console`` while the block runs; the
    final table stays on the screen."""
    board = StageBoard(stages)
    with Live(board, console=console, refresh_per_second=4, transient=False,
              redirect_stdout=False, redirect_stderr=True):
        yield board
