"""VideoChat-R1's rule-based rewards: pure functions of (completion, solution).

This module is the one entry point to every reward rule: the GRPO trainer (through
:func:`make_reward_funcs`) and the evaluation scorer (through :func:`score`) both call it, so a
trained model is judged by exactly the rules it was trained on. The rules shared by every task
are here (the tag layout of the format reward, which block is read, the TRL adapters); each
task's own rules (its content rewards and any extra format check) are in its module under
:mod:`videorft.video_tasks`, found through the task registry, and re-exported below under the
names they always had (:func:`temporal_iou`, :func:`tracking_iou`, :func:`glue_iou`,
:func:`option_accuracy`).

Each component is a float in [0, 1] and the components of a task are summed (reference totals:
temporal grounding and tracking = format + IoU, max 2; grounded QA = format + glue IoU + accuracy,
max 3; multiple choice = format + accuracy). Nothing here raises on model output: text that does
not parse scores 0, and non-finite arithmetic (``1e400``, 5,000-digit numbers) scores 0.

Decisions beyond the reference (tested in tests/test_rewards.py); those that concern one task
are in its module: the reversed interval and the timing numbers in
:mod:`~videorft.video_tasks.temporal_grounding`, the tracking answer in
:mod:`~videorft.video_tasks.tracking`, the glue list in :mod:`~videorft.video_tasks.grounded_qa`,
the option letter in :mod:`~videorft.video_tasks.mcq`.

* **Which block.** Every content parser (temporal IoU, tracking, glue, option letter, and the
  extra parse checks of the format reward) reads the *last* ``<answer>`` (or ``<glue>``) block,
  found with ``re.findall(r"<answer>(.*?)</answer>", DOTALL)`` semantics. The reference reads the
  first block in some places and the last in others; one rule makes format and IoU agree.
* **Nested / duplicated tags** pass the format check whenever the reference's regex fullmatches
  (``<answer><answer>1 to 2</answer></answer>`` does): the rule is the paper's, and a duplicated
  block gains nothing, since content is read from the last block only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import videorft.video_tasks as video_tasks
from videorft.video_tasks.base import COMPONENTS, VideoTask
from videorft.video_tasks.common import as_text, finite
from videorft.video_tasks.grounded_qa import glue_iou
from videorft.video_tasks.mcq import option_accuracy
from videorft.video_tasks.temporal_grounding import temporal_iou
from videorft.video_tasks.tracking import tracking_iou

__all__ = [
    "COMPONENTS",
    "TASK_REWARDS",
    "RewardComponent",
    "format_reward",
    "glue_iou",
    "make_reward_funcs",
    "option_accuracy",
    "score",
    "temporal_iou",
    "tracking_iou",
]

#: Which reward components judge which task (their sum is the task's total reward): a live
#: view of each registered task's ``rewards``.
TASK_REWARDS = video_tasks.table("rewards")

# --------------------------------------------------------------------------------------------
# Tag structure
# --------------------------------------------------------------------------------------------

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_GLUE_OPEN, _GLUE_CLOSE = "<glue>", "</glue>"
_THINK_TO_ANSWER = re.compile(r"</think>\s*<answer>")
_ANSWER_TO_GLUE = re.compile(r"</answer>\s*<glue>")


def _has_tag_structure(text: str, *, thinking: bool, glue: bool) -> bool:
    """Whether ``[<think>.*?</think>\\s*]<answer>.*?</answer>[\\s*<glue>.*?</glue>]`` fullmatches.

    Same answer as ``re.fullmatch`` with DOTALL (tests check this on random inputs), but linear:
    the fullmatch must start with the first opening tag and end with the last closing tag, and
    in between the separators must occur in order without overlapping; taking each separator's
    earliest occurrence is optimal. The plain regex backtracks cubically on repeated blocks.
    """
    opener = _THINK_OPEN if thinking else _ANSWER_OPEN
    closer = _GLUE_CLOSE if glue else _ANSWER_CLOSE
    if not (text.startswith(opener) and text.endswith(closer)):
        return False
    end = len(text) - len(closer)
    pos = len(opener)
    if pos > end:
        return False
    separators = ([_THINK_TO_ANSWER] if thinking else []) + ([_ANSWER_TO_GLUE] if glue else [])
    for separator in separators:
        found = separator.search(text, pos, end)
        if found is None:
            return False
        pos = found.end()
    return True


# --------------------------------------------------------------------------------------------
# The reward components
# --------------------------------------------------------------------------------------------


def format_reward(completion: str, task: str, *, thinking: bool) -> float:
    """1.0 when the completion has exactly the requested tag layout (and parsable content).

    The layout is the reference's fullmatch on the stripped text (with a glue block after the
    answer for a task that has one, grounded QA); then the task's own format check applies
    (grounded QA's glue must parse, tracking's answer must be exactly eight 4-number boxes).
    """
    spec = video_tasks.get(task)
    text = as_text(completion).strip()
    if not _has_tag_structure(text, thinking=thinking, glue=spec.glue):
        return 0.0
    return 1.0 if spec.format_ok(text) else 0.0


# --------------------------------------------------------------------------------------------
# Per-task scoring and the TRL adapters
# --------------------------------------------------------------------------------------------


def _component(
    name: str, completion: str, task: VideoTask, solution: Any, thinking: bool
) -> float:
    if name == "format":
        return format_reward(completion, task.name, thinking=thinking)
    return task.content_rewards[name](completion, solution)


def score(completion: str, task: str, solution: Any, *, thinking: bool) -> dict[str, float]:
    """The reward components that apply to ``task``; their sum is the task's total reward."""
    spec = video_tasks.get(task)
    return {name: _component(name, completion, spec, solution, thinking) for name in spec.rewards}


def _completion_text(completion: Any) -> str:
    """Plain text of a TRL completion: a string, or conversational ``[{"role", "content"}]``.

    Content may itself be a list of parts (``{"type": "text", "text": ...}``); the assistant
    messages' text is joined. Any other shape reads as empty text (reward 0), never an error.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, list | tuple):
        return ""
    texts = []
    for message in completion:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list | tuple):
            texts.extend(
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            )
    return "".join(texts)


class RewardComponent:
    """One reward component as a TRL reward function (picklable; ``__name__`` names the metric).

    Called as ``f(prompts, completions, task=[...], solution=[...], **other_columns)``, it
    returns one value per completion: ``weight * component`` for samples whose task the
    component judges, ``None`` for the others (TRL 1.16 turns None into NaN and leaves it out
    of that sample's weighted sum and of the component's logged mean).
    """

    def __init__(self, name: str, *, thinking: bool, weights: dict[str, float]):
        if name not in COMPONENTS:
            raise ValueError(f"unknown reward component {name!r}")
        self.__name__ = self.__qualname__ = name
        self.name = name
        self.thinking = thinking
        self.weights = weights  # task -> weight (only tasks this component judges)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        tasks, solutions = kwargs.get("task"), kwargs.get("solution")
        if tasks is None or solutions is None:
            raise ValueError(
                "reward functions need the dataset columns 'task' and 'solution' "
                "(do not let the trainer drop them: remove_unused_columns=False)"
            )
        if not len(tasks) == len(solutions) == len(completions):
            raise ValueError(
                f"{len(completions)} completions but {len(tasks)} tasks and "
                f"{len(solutions)} solutions"
            )
        rewards: list[float | None] = []
        for completion, task, solution in zip(completions, tasks, solutions, strict=True):
            spec = video_tasks.get(task)
            if spec.name not in self.weights:
                rewards.append(None)
                continue
            value = _component(
                self.name, _completion_text(completion), spec, solution, self.thinking
            )
            rewards.append(self.weights[spec.name] * value)
        return rewards

    def __repr__(self) -> str:
        return f"RewardComponent({self.name!r}, thinking={self.thinking}, weights={self.weights})"


def make_reward_funcs(
    thinking: bool, weights: dict[str, dict[str, float]] | None = None
) -> list[RewardComponent]:
    """The ``format``, ``iou`` and ``accuracy`` reward functions for ``GRPOTrainer``.

    ``weights[task][component]`` multiplies that component for that task (default 1.0), so the
    per-sample sum TRL forms is the reference's per-task total when no weights are given.
    """
    weights = weights or {}
    for task, per_task in weights.items():
        if task not in video_tasks.names():
            raise ValueError(f"reward weights name unknown task {task!r}")
        components = video_tasks.get(task).rewards
        for name, weight in per_task.items():
            if name not in components:
                raise ValueError(
                    f"reward weights: component {name!r} does not apply to task {task!r} "
                    f"(it has {', '.join(components)})"
                )
            if finite(weight) is None or weight < 0:
                raise ValueError(
                    f"reward weight {task}.{name} must be a finite number >= 0, got {weight!r}"
                )
    return [
        RewardComponent(
            name,
            thinking=thinking,
            weights={
                task.name: float(weights.get(task.name, {}).get(name, 1.0))
                for task in video_tasks.REGISTRY.values()
                if name in task.rewards
            },
        )
        for name in COMPONENTS
    ]
