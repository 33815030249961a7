"""Per-task reward in the training metrics: the reward functions, tapped.

TRL logs each reward function's mean (``rewards/<func>/mean``) and the total, not which task a
reward came from. :meth:`TaskRewardTap.wrap` wraps the reward functions so that, once all of
them have scored a batch, each sample's total is reported through TRL's ``log_metric`` hook
under ``rewards_per_task/<task>/mean``; TRL averages it over samples and processes, and a step
without a sample of some task has no row for that task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

#: Metric name of a task's mean total reward (sum of its weighted components).
TASK_REWARD_METRIC = "rewards_per_task/{task}/mean"
TASK_REWARD_PREFIX = "rewards_per_task/"


class TaskRewardTap:
    """Per-task mean total reward, reported through TRL's ``log_metric`` reward kwarg.

    TRL calls the reward functions one after another on the same ``completions`` list; each
    wrapped function hands its outputs here, and once all of them have scored the batch every
    sample's total (the sum of the components that judge its task, as TRL sums them) is logged
    under :data:`TASK_REWARD_METRIC`. One ``log_metric`` call per sample makes TRL's value a
    sample-weighted mean over the generation batch on all processes (batches within one logging
    step are then averaged, as TRL does for its own reward metrics).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._batch: Sequence[Any] | None = None
        self._outputs: dict[int, Sequence[float | None]] = {}

    @classmethod
    def wrap(cls, funcs: Sequence[Callable[..., Any]]) -> list[TappedReward]:
        tap = cls(len(funcs))
        return [TappedReward(func, index, tap) for index, func in enumerate(funcs)]

    def record(self, index: int, completions: Sequence[Any], tasks: Sequence[str] | None,
               rewards: Sequence[float | None], log_metric: Callable[[str, float], None] | None
               ) -> None:
        if self._batch is not completions:  # a new batch (or an earlier one that raised)
            self._batch, self._outputs = completions, {}
        self._outputs[index] = rewards
        if len(self._outputs) < self.count:
            return
        outputs = list(self._outputs.values())
        self._batch, self._outputs = None, {}
        if tasks is None or log_metric is None:
            return
        for i, task in enumerate(tasks):
            values = [out[i] for out in outputs if out[i] is not None and not math.isnan(out[i])]
            if values:
                log_metric(TASK_REWARD_METRIC.format(task=task), float(sum(values)))


class TappedReward:
    """A reward function that also reports its outputs to a :class:`TaskRewardTap`; keeps the
    wrapped function's ``__name__`` (TRL's metric name)."""

    def __init__(self, func: Callable[..., Any], index: int, tap: TaskRewardTap) -> None:
        self.func, self.index, self.tap = func, index, tap
        self.__name__ = getattr(func, "__name__", type(func).__name__)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **kwargs: Any) -> list[float | None]:
        rewards = self.func(prompts, completions, **kwargs)
        self.tap.record(self.index, completions, kwargs.get("task"), rewards,
                        kwargs.get("log_metric"))
        return rewards

    def __repr__(self) -> str:
        return f"TappedReward({self.func!r})"
