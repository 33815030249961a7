"""The task interface: everything the pipeline needs to know about one video task.

A task (:class:`VideoTask`) owns its record shape (what its ``inputs`` and ``solution`` must
be), the truth normalisation the scorer applies to predictions files, its prompt, the ideal
answer the warm start trains on, its reward components and content rewards, and its metrics.
Before this interface each of those was an ``if task == ...`` branch in a different module,
so adding a task meant editing about nine files and the branches could drift apart; now a task
is one module under :mod:`videorft.video_tasks` and one entry in its registry.

The cross-task rules stay with their modules: the record fields every task shares in
:mod:`videorft.records`, the tag layout of the format reward and the TRL adapters in
:mod:`videorft.rewards`, reading and aggregating predictions in
:mod:`videorft.evaluation.scoring`. Tasks call back into them only through the small helpers
defined here (:class:`RecordChecker`, :func:`truth_span`, :func:`truth_box`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

from videorft.errors import DataValidationError
from videorft.video_tasks.common import finite, is_number

__all__ = [
    "COMPONENTS",
    "REFERENCE_THOUGHT",
    "THINKING",
    "THRESHOLD_TOLERANCE",
    "Fail",
    "RecordChecker",
    "RewardFn",
    "VideoTask",
    "truth_box",
    "truth_span",
]

#: Every reward component a task may use, in the order TRL logs them. ``format`` judges every
#: task (its rule is :func:`videorft.rewards.format_reward`); the others are content rewards.
COMPONENTS = ("format", "iou", "accuracy")

#: The thinking-mode instruction, VideoChat-R1's wording, between question and answer sentence.
THINKING = (
    "Output your thought process within the <think> </think> tags, including analysis with "
    "either specific timestamps (xx.xx) or time ranges (xx.xx to xx.xx) in <timestep> "
    "</timestep> tags."
)
# No-think mode starts the answer sentence without "Then, " (there is no thought before it).
_NO_THINK_PREFIX = ("Then, provide", "Provide")

#: The thought a reference answer carries in thinking mode (the format needs a think block).
REFERENCE_THOUGHT = "<think>I watch the video and locate the relevant moment.</think>"

#: ``r@k`` / ``sr@k`` count an item when ``iou >= k - THRESHOLD_TOLERANCE``: IoUs computed from
#: decimal seconds carry round-off, and a hand-computed 0.7 must count at R@0.7.
THRESHOLD_TOLERANCE = 1e-9

#: A content reward: ``(completion, solution) -> value in [0, 1]``; never raises.
RewardFn = Callable[[str, Any], float]
#: Raises the caller's DataValidationError for a problem (the scorer's names file and line).
Fail = Callable[[str], NoReturn]


class RecordChecker:
    """Raises DataValidationError with the file and record id already filled in.

    :func:`videorft.records.validate_record` checks the fields every record shares, then hands
    one of these to the task's :meth:`VideoTask.validate`, so a task's messages name the file
    and record like the shared ones do.
    """

    def __init__(
        self, record: dict[str, Any], file: str | None, *, duration_tolerance: float = 0.0
    ):
        self.record = record
        self.file = file
        self.duration_tolerance = duration_tolerance
        self.rid = str(record.get("id")) if record.get("id") is not None else None

    def fail(self, problem: str) -> NoReturn:
        raise DataValidationError(problem, file=self.file, record=self.rid)

    def require(self, condition: Any, problem: str) -> None:
        if not condition:
            self.fail(problem)

    def text(self, inputs: dict[str, Any], key: str) -> None:
        """``inputs[key]`` must be a non-blank string (a query, an object name, a question)."""
        self.require(
            isinstance(inputs.get(key), str) and inputs[key].strip(),
            f"inputs.{key} is missing or empty",
        )

    def span(self, value: Any, what: str) -> None:
        """A ``[start, end]`` of seconds inside the video (within the checker's tolerance)."""
        self.require(
            isinstance(value, list | tuple) and len(value) == 2 and all(map(is_number, value)),
            f"{what} must be [start, end] in seconds, got {value!r}",
        )
        start, end = value
        self.require(start >= 0, f"{what} starts before 0 s: {value!r}")
        self.require(end > start, f"{what} ends before it starts (end {end} <= start {start})")
        duration = self.record.get("duration")
        if duration is not None:
            self.require(
                end <= duration + self.duration_tolerance,
                f"{what} {value!r} goes beyond the video duration {duration} s",
            )

    def box(self, value: Any, what: str) -> None:
        """A non-empty ``[x0, y0, x1, y1]`` box normalised to [0, 1]."""
        self.require(
            isinstance(value, list | tuple) and len(value) == 4 and all(map(is_number, value)),
            f"{what} must be [x0, y0, x1, y1], got {value!r}",
        )
        x0, y0, x1, y1 = value
        self.require(
            all(0.0 <= v <= 1.0 for v in value),
            f"{what} {value!r} lies outside the frame (coordinates must be normalised to [0, 1])",
        )
        self.require(x1 > x0 and y1 > y0, f"{what} {value!r} is empty (need x1 > x0, y1 > y0)")


def truth_span(value: Any, what: str, fail: Fail) -> list[float]:
    """A scored solution's ``[start, end]``: finite, ``0 <= start <= end``; else ``fail``.

    Looser than :meth:`RecordChecker.span` (an empty span and any duration pass): the scorer
    judges predictions files, whose truth may come from elsewhere, and only refuses a truth
    no answer could be scored against.
    """
    if not isinstance(value, list | tuple) or len(value) != 2:
        fail(f"{what} must be [start, end] in seconds, got {value!r}")
    start, end = finite(value[0]), finite(value[1])
    if start is None or end is None:
        fail(f"{what} must hold two finite numbers, got {value!r}")
    if start < 0:
        fail(f"impossible span {what} {value!r}: starts before 0 s")
    if start > end:
        fail(f"impossible span {what} {value!r}: ends before it starts")
    return [start, end]


def truth_box(value: Any, what: str, fail: Fail) -> list[float]:
    """A scored solution's box: four finite numbers, ``x0 <= x1`` and ``y0 <= y1``; else
    ``fail`` (like :func:`truth_span`, looser than the record rule)."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        fail(f"{what} must be [x0, y0, x1, y1], got {value!r}")
    numbers = [finite(v) for v in value]
    if any(v is None for v in numbers):
        fail(f"{what} must hold four finite numbers, got {value!r}")
    x0, y0, x1, y1 = numbers
    if x1 < x0 or y1 < y0:  # type: ignore[operator]  # None excluded just above
        fail(f"impossible box {what} {value!r}: need x0 <= x1 and y0 <= y1")
    return numbers  # type: ignore[return-value]


class VideoTask(ABC):
    """One task: subclass, set the class attributes, implement the abstract methods, and add
    an instance to the registry (:func:`videorft.video_tasks.register`).

    Class attributes:

    * ``name`` - the ``task`` value of records, dataset rows and predictions.
    * ``rewards`` - its reward components, ``"format"`` first, from :data:`COMPONENTS`; their
      sum is the task's total reward.
    * ``content_rewards`` - ``{component: RewardFn}`` for every component but ``format``.
    * ``metrics`` - its table metrics in table order (:meth:`item_values` says what each is).
    * ``glue`` - the answer is followed by a ``<glue>`` evidence block (grounded QA), which
      the format reward's tag layout then requires.
    * ``nframes`` - frames a video sample must be sampled at, when the solution is per frame
      (tracking's eight boxes); None: the frame sampler decides.
    * ``answer_sentence`` - the prompt's answer instruction in thinking mode, starting
      ``"Then, provide"`` (no-think mode drops the ``"Then, "``).
    """

    name: ClassVar[str]
    rewards: ClassVar[tuple[str, ...]]
    content_rewards: ClassVar[Mapping[str, RewardFn]]
    metrics: ClassVar[tuple[str, ...]]
    glue: ClassVar[bool] = False
    nframes: ClassVar[int | None] = None
    answer_sentence: ClassVar[str]

    # ---------------------------------------------------------------------------- records

    @abstractmethod
    def validate(self, record: dict[str, Any], check: RecordChecker) -> None:
        """Check ``record["inputs"]`` (already an object) and ``record["solution"]``.

        The shared fields (id, video or frames, duration, nframes) are checked before; raise
        through ``check`` with one line naming the problem.
        """

    @abstractmethod
    def normalise_solution(self, raw: Any, fail: Fail) -> Any:
        """A predictions file's solution (maybe JSON-encoded) in the record shape, for the
        scorer; ``fail(problem)`` when no answer could be scored against it."""

    # ---------------------------------------------------------------------------- prompts

    @abstractmethod
    def question(self, record: dict[str, Any]) -> str:
        """The prompt's question sentence for a record."""

    def prompt(self, record: dict[str, Any], *, thinking: bool) -> str:
        """Question, the thinking instruction (thinking mode only), answer sentence."""
        question, answer = self.question(record), self.answer_sentence
        if thinking:
            return f"{question} {THINKING} {answer}"
        if answer.startswith(_NO_THINK_PREFIX[0]):
            answer = _NO_THINK_PREFIX[1] + answer[len(_NO_THINK_PREFIX[0]) :]
        return f"{question} {answer}"

    # ---------------------------------------------------------------------------- warm start

    def load_solution(self, solution: Any) -> Any:
        """A dataset row's solution for :meth:`answer`: rows carry it JSON-encoded."""
        return json.loads(solution) if isinstance(solution, str) else solution

    @abstractmethod
    def answer(self, solution: Any) -> str:
        """The ideal answer blocks (``<answer>...</answer>`` and any others) for a solution."""

    def reference_answer(self, solution: Any, *, thinking: bool) -> str:
        """The ideal completion: the reward's format filled with the ground truth, so it scores
        1.0 on every component (tests/test_warm_start.py checks that)."""
        answer = self.answer(self.load_solution(solution))
        return REFERENCE_THOUGHT + answer if thinking else answer

    # ---------------------------------------------------------------------------- rewards

    def format_ok(self, text: str) -> bool:
        """Extra format rule on a stripped completion whose tag layout already passed (e.g.
        tracking's answer must be eight boxes); none by default."""
        return True

    # ---------------------------------------------------------------------------- metrics

    def item_values(self, rows: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
        """``{metric: [one value per row]}`` of scored items (``score_item`` outputs).

        Every table metric is the mean of these per-item values, which is what lets the
        bootstrap resample items. The metric's name says what it is: ``miou`` / ``ao``, the
        item's IoU; ``r@k`` / ``sr@k``, 1.0 when the IoU is at least k (less
        :data:`THRESHOLD_TOLERANCE`), else 0.0; ``accuracy``, the accuracy component (0 or 1).
        """
        ious = [float(row["iou"]) for row in rows] if "iou" in self.rewards else []
        accuracy = [float(row["accuracy"]) for row in rows] if "accuracy" in self.rewards else []
        values: dict[str, list[float]] = {}
        for metric in self.metrics:
            if metric in ("miou", "ao"):
                values[metric] = ious
            elif metric == "accuracy":
                values[metric] = accuracy
            else:  # "r@k" / "sr@k"
                threshold = float(metric.split("@", 1)[1]) - THRESHOLD_TOLERANCE
                values[metric] = [1.0 if v >= threshold else 0.0 for v in ious]
        return values

    def __repr__(self) -> str:
        return f"<video task {self.name!r}>"
