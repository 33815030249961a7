"""The run's metric history: DVCLive from a Trainer callback, kept continuous across resumes,
and the reward curve drawn from it.

TRL 1.16 logs, per logging step: ``reward``, ``reward_std``, ``rewards/<func>/mean|std``,
``frac_reward_zero_std``, ``kl`` (beta > 0), ``entropy``, ``clip_ratio/*``,
``completions/*_length``, ``num_tokens``, ``step_time``; the Trainer adds ``loss``,
``grad_norm``, ``learning_rate``, ``epoch``; the reward tap
(:mod:`videorft.trainer.reward_tap`) adds ``rewards_per_task/<task>/mean``. DVCLive writes the
history (``metrics.json``, ``plots/metrics/**/*.tsv``) from :class:`MetricsCallback`, all but
the values that measure time (:func:`is_timing`): those files are DVC outputs, and the same
inputs must give the same bytes (the run's times go to ``run.json``, which DVC does not track,
and to the console). On resume the history is first cut
back to the checkpoint's step, so the steps a killed run logged after its last checkpoint are
not kept twice. ``reward_curve.png`` is drawn from that history at the end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from videorft.io import atomic_open, atomic_write_text
from videorft.trainer.reward_tap import TASK_REWARD_PREFIX

log = logging.getLogger(__name__)

REWARD_CURVE = "reward_curve.png"


def is_timing(key: str) -> bool:
    """Whether a logged value measures time (``step_time``, ``train_runtime``,
    ``train_samples_per_second``, ...), not training: it differs between any two runs."""
    return "runtime" in key or "per_second" in key or key == "step_time"


def _metrics_root(metrics_dir: Path) -> Path:
    return Path(metrics_dir) / "plots" / "metrics"


def read_history(metrics_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric's ``(step, value)`` rows from DVCLive's TSV files, by metric name."""
    root = _metrics_root(metrics_dir)
    history: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        if "step" not in header or len(header) < 2:
            continue
        rows = []
        for line in lines[1:]:
            fields = line.split("\t")
            if len(fields) != len(header):
                continue
            try:
                rows.append((int(fields[header.index("step")]), float(fields[-1])))
            except ValueError:
                continue
        history[path.relative_to(root).with_suffix("").as_posix()] = rows
    return history


def truncate_history(metrics_dir: Path, step: int) -> dict[str, Any]:
    """Cut every TSV back to rows with ``step <= step`` (a resumed run logs the rest again;
    torn rows of a killed writer go too); returns each remaining metric's last value."""
    root = _metrics_root(metrics_dir)
    last: dict[str, Any] = {}
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t") if lines else []
        kept = []
        if "step" in header:
            for line in lines[1:]:
                fields = line.split("\t")
                try:
                    if len(fields) == len(header) and int(fields[header.index("step")]) <= step:
                        kept.append(line)
                except ValueError:
                    continue
        if not kept:
            path.unlink()
            continue
        if len(kept) != len(lines) - 1:
            atomic_write_text(path, os.linesep.join([lines[0], *kept]) + os.linesep)
        value = kept[-1].split("\t")[-1]
        try:
            last[path.relative_to(root).with_suffix("").as_posix()] = float(value)
        except ValueError:
            last[path.relative_to(root).with_suffix("").as_posix()] = value
    return last


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a/b": 1}`` -> ``{"a": {"b": 1}}`` (DVCLive's metrics.json layout)."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def trailing_mean(values: list[float], window: int) -> list[float]:
    """Each value replaced by the mean of it and up to ``window - 1`` values before it.

    GRPO's per-step reward is a handful of groups' mean, so a long run's raw curve is mostly
    sampling noise; the trailing mean shows the trend without using later steps."""
    out: list[float] = []
    running = 0.0
    for i, value in enumerate(values):
        running += value
        if i >= window:
            running -= values[i - window]
        out.append(running / min(i + 1, window))
    return out


def smoothing_window(points: int) -> int:
    """Logged points per trailing mean: about a twentieth of the run, 1 for short runs."""
    return max(1, points // 20)


def plot_reward_curve(metrics_dir: Path, path: Path | None = None) -> Path | None:
    """Total reward (mean +- std) and each task's mean reward vs step, as a PNG. Each curve
    is drawn raw (faint) and as its trailing mean over a twentieth of the logged steps."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    history = read_history(metrics_dir)
    total = history.get("reward")
    if not total:
        return None
    path = Path(path or Path(metrics_dir) / REWARD_CURVE)
    window = smoothing_window(len(total))
    fig = Figure(figsize=(7.5, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    std = dict(history.get("reward_std", []))
    if std:
        ax.fill_between([s for s, _ in total], [v - std.get(s, 0.0) for s, v in total],
                        [v + std.get(s, 0.0) for s, v in total], color="black", alpha=0.08,
                        linewidth=0, label="total ± std")
    curves = [("total", total, "black", 2.0)]
    for name in sorted(n for n in history if n.startswith(TASK_REWARD_PREFIX)):
        label = name[len(TASK_REWARD_PREFIX):].rsplit("/", 1)[0]
        curves.append((label, history[name], None, 1.4))
    for label, rows, colour, width in curves:
        xs = [s for s, _ in rows]
        ys = [v for _, v in rows]
        (line,) = ax.plot(xs, trailing_mean(ys, window), color=colour, linewidth=width,
                          label=label)
        if window > 1:
            ax.plot(xs, ys, color=line.get_color(), linewidth=0.6, alpha=0.25)
    ax.set_xlabel("step")
    ax.set_ylabel("reward (sum of components)")
    smoothing = f"; lines: trailing mean of {window} logged steps" if window > 1 else ""
    ax.set_title(f"GRPO reward per step{smoothing}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path


def _open_live(metrics_dir: Path) -> Any:
    """DVCLive writer for ``metrics_dir``, appending (resume) and never creating experiments.

    DVCLive asks git for the current commit when it finds a DVC repo; in a repo with no commit
    yet that raises scmrepo's SCMError (not a DvcException, so DVCLive does not catch it).
    Nothing here needs the commit (no experiment is saved), so then open it without the repo.
    """
    from unittest import mock

    import dvclive.live
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    kwargs = {"dir": str(metrics_dir), "resume": True, "save_dvc_exp": False, "dvcyaml": None}
    try:
        return Live(**kwargs)
    except SCMError as exc:
        log.info("DVCLive without git integration (%s)", exc)
        with mock.patch.object(dvclive.live, "get_dvc_repo", return_value=None):
            return Live(**kwargs)


class MetricsCallback(TrainerCallback):
    """Per-step Trainer/TRL logs into DVCLive (main process only), history kept continuous.

    ``Live(resume=True)`` appends to the existing TSVs; before opening it, the history is cut
    back to the step training restarts from, and metrics.json is rebuilt from what remains
    (a file torn by a kill would otherwise break DVCLive's resume). No git/DVC repo is needed
    (``save_dvc_exp=False``, ``dvcyaml=None``).
    """

    def __init__(self, metrics_dir: Path) -> None:
        self.metrics_dir = Path(metrics_dir)
        self.live: Any = None
        self.final_logs: dict[str, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return

        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        last = truncate_history(self.metrics_dir, state.global_step)
        (self.metrics_dir / "metrics.json").unlink(missing_ok=True)
        self.live = _open_live(self.metrics_dir)
        self.live.summary = _nested(last)
        self.live.step = state.global_step
        if last:
            self.live.make_summary()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is None or not logs:
            return
        if "train_runtime" in logs:  # the end-of-training totals, not a step
            self.final_logs = dict(logs)
            return
        self.live.step = state.global_step
        for name, value in logs.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or is_timing(name):
                continue
            self.live.log_metric(name, value)
        self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is None:
            return
        self.live.make_summary()
        plot_reward_curve(self.metrics_dir)
