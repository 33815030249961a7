"""The task registry: the built-in tasks in canonical order, clear errors for unknown names, and
a fifth task defined here alone (``counting``) that runs through record validation, prompts,
rewards, the TRL reward functions, reference answers and ``videorft score`` once registered,
with no other file edited. That is the point of videorft/video_tasks/: a task is one module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, get_args

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

import videorft.video_tasks as video_tasks
from videorft import params, records, rewards
from videorft.cli import app
from videorft.errors import DataValidationError
from videorft.evaluation import scoring
from videorft.prompts import THINKING, build_prompt
from videorft.sources import synthetic
from videorft.trainer.data import reference_answer
from videorft.video_tasks.base import REFERENCE_THOUGHT, RecordChecker, VideoTask
from videorft.video_tasks.common import as_text, decode_json, last_block

PAPER_ORDER = ("temporal_grounding", "tracking", "grounded_qa", "mcq")
FILE = "data/raw/toy/annotations.jsonl"

# ------------------------------------------------------------------------------ the toy task


def count_accuracy(completion: str, solution: Any) -> float:
    """1.0 when the last answer block holds exactly the true count."""
    block = last_block(as_text(completion), "<answer>", "</answer>")
    true = decode_json(solution)
    if block is None or isinstance(true, bool) or not isinstance(true, int):
        return 0.0
    return 1.0 if block.strip() == str(true) else 0.0


class Counting(VideoTask):
    """How many times does something happen: one integer."""

    name = "counting"
    rewards = ("format", "accuracy")
    content_rewards = MappingProxyType({"accuracy": count_accuracy})
    metrics = ("accuracy",)
    answer_sentence = (
        "Then, provide the number within the <answer> </answer> tags, digits only. "
        "For example: <answer>3</answer>."
    )

    def validate(self, record: dict[str, Any], check: RecordChecker) -> None:
        check.text(record["inputs"], "question")
        solution = record["solution"]
        check.require(
            isinstance(solution, int) and not isinstance(solution, bool) and solution >= 0,
            f"solution must be a count (an integer >= 0), got {solution!r}",
        )

    def normalise_solution(self, raw: Any, fail: Any) -> int:
        value = decode_json(raw)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(f"counting solution must be an integer >= 0, got {raw!r}")
        return value

    def question(self, record: dict[str, Any]) -> str:
        return f'Count in the video: "{record["inputs"]["question"]}"'

    def answer(self, solution: Any) -> str:
        return f"<answer>{solution}</answer>"


@pytest.fixture
def counting() -> Iterator[VideoTask]:
    """The toy task, registered for one test and removed afterwards (other tests see four)."""
    task = video_tasks.register(Counting())
    try:
        yield task
    finally:
        video_tasks.unregister(task.name)
    assert video_tasks.names() == PAPER_ORDER


def toy_record(**changes: Any) -> dict[str, Any]:
    record = records.make_record(
        id="toy/1", task="counting", source="toy", video="toy/videos/1.mp4", duration=10.0,
        inputs={"question": "how many times does the ball bounce?"}, solution=3,
    )
    record.update(changes)
    return record


def think(answer: str) -> str:
    return f"<think>I count the bounces.</think><answer>{answer}</answer>"


# ------------------------------------------------------------------------------ the registry


def test_the_registry_holds_the_built_in_tasks_in_canonical_order() -> None:
    assert tuple(video_tasks.REGISTRY) == video_tasks.CANONICAL == PAPER_ORDER
    assert video_tasks.names() == PAPER_ORDER
    assert [task.name for task in video_tasks.REGISTRY.values()] == list(PAPER_ORDER)
    # Everything that lists the tasks lists them in that order.
    assert records.TASKS == synthetic.TASKS == PAPER_ORDER
    assert tuple(rewards.TASK_REWARDS) == tuple(scoring.METRICS) == PAPER_ORDER
    # params.py reads the registry; the synthetic generator spells out the tasks it can draw.
    assert params.BuildDatasetParams().tasks == list(PAPER_ORDER)
    assert get_args(synthetic.Task) == PAPER_ORDER


def test_the_per_task_tables_read_like_they_always_did() -> None:
    assert dict(rewards.TASK_REWARDS) == {
        "temporal_grounding": ("format", "iou"),
        "tracking": ("format", "iou"),
        "grounded_qa": ("format", "iou", "accuracy"),
        "mcq": ("format", "accuracy"),
    }
    assert dict(scoring.METRICS) == {
        "temporal_grounding": ("miou", "r@0.3", "r@0.5", "r@0.7"),
        "tracking": ("ao", "sr@0.5", "sr@0.75"),
        "grounded_qa": ("accuracy", "miou"),
        "mcq": ("accuracy",),
    }


@pytest.mark.parametrize("name", ["captioning", "", "MCQ", None, 3, ["mcq"]])
def test_unknown_task_names_fail_clearly(name: Any) -> None:
    expected = (f"unknown task {name!r} (expected one of temporal_grounding, tracking, "
                "grounded_qa, mcq)")
    with pytest.raises(video_tasks.UnknownTaskError) as err:
        video_tasks.get(name)
    assert str(err.value) == expected
    assert isinstance(err.value, ValueError)  # what callers have always caught
    with pytest.raises(ValueError, match=r"^unknown task"):
        rewards.score("<answer>1</answer>", name, 1, thinking=False)


def test_the_registry_refuses_what_it_could_not_run() -> None:
    with pytest.raises(ValueError, match="already registered"):
        video_tasks.register(video_tasks.get("mcq"))
    with pytest.raises(ValueError, match="built in"):
        video_tasks.unregister("mcq")
    with pytest.raises(video_tasks.UnknownTaskError):
        video_tasks.unregister("counting")
    with pytest.raises(TypeError, match="VideoTask"):
        video_tasks.register("counting")  # type: ignore[arg-type]

    class NoFormat(Counting):
        name = "no_format"
        rewards = ("accuracy",)

    class UnknownComponent(Counting):
        name = "unknown_component"
        rewards = ("format", "bleu")

    class MissingReward(Counting):
        name = "missing_reward"
        content_rewards = MappingProxyType({})

    class NoMetrics(Counting):
        name = "no_metrics"
        metrics = ()

    for task, needle in [(NoFormat(), "must start with 'format'"),
                         (UnknownComponent(), "unknown reward component"),
                         (MissingReward(), "content_rewards must give a function"),
                         (NoMetrics(), "no metrics")]:
        with pytest.raises(ValueError, match=needle):
            video_tasks.register(task)
    assert video_tasks.names() == PAPER_ORDER


def test_a_registered_task_comes_after_the_built_in_ones(counting: VideoTask) -> None:
    assert video_tasks.names() == (*PAPER_ORDER, "counting")
    assert video_tasks.get("counting") is counting
    assert rewards.TASK_REWARDS["counting"] == ("format", "accuracy")
    assert scoring.METRICS["counting"] == ("accuracy",)
    assert records.TASKS == PAPER_ORDER  # the built-in tasks; the registry has the rest


# ------------------------------------------------------------------ the toy task end to end


def test_toy_records_validate(counting: VideoTask) -> None:
    good = toy_record()
    assert records.validate_record(good, file=FILE) is good
    for record, problem in [
        (toy_record(solution="three"), "solution must be a count (an integer >= 0), got 'three'"),
        (toy_record(solution=-1), "solution must be a count (an integer >= 0), got -1"),
        (toy_record(inputs={"question": " "}), "inputs.question is missing or empty"),
    ]:
        with pytest.raises(DataValidationError) as err:
            records.validate_record(record, file=FILE)
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(FILE) and "record 'toy/1'" in message
        assert message.endswith(problem)


def test_toy_records_are_unknown_once_unregistered() -> None:
    with pytest.raises(DataValidationError, match="unknown task 'counting'"):
        records.validate_record(toy_record(), file=FILE)


def test_params_take_the_toy_task_without_an_edit(counting: VideoTask) -> None:
    """build_dataset.tasks and train.reward_weights name tasks from the registry, so the
    dataset and the reward weights take a new task with no list in params.py to extend."""
    dataset = params.BuildDatasetParams(tasks=["temporal_grounding", "counting"])
    assert dataset.tasks == ["temporal_grounding", "counting"]
    train = params.TrainParams(reward_weights={"counting": {"accuracy": 0.5}})
    assert train.reward_weights == {"counting": {"accuracy": 0.5}}


def test_params_refuse_a_task_nobody_registered() -> None:
    with pytest.raises(ValidationError, match="unknown task 'counting'"):
        params.BuildDatasetParams(tasks=["counting"])


def test_toy_prompt(counting: VideoTask) -> None:
    question = 'Count in the video: "how many times does the ball bounce?"'
    assert build_prompt(toy_record(), thinking=True) == (
        f"{question} {THINKING} {Counting.answer_sentence}"
    )
    assert build_prompt(toy_record(), thinking=False) == (
        f"{question} Provide the number within the <answer> </answer> tags, digits only. "
        "For example: <answer>3</answer>."
    )


def test_toy_rewards(counting: VideoTask) -> None:
    assert rewards.score(think("3"), "counting", 3, thinking=True) == {
        "format": 1.0, "accuracy": 1.0}
    assert rewards.score(think("4"), "counting", "3", thinking=True) == {
        "format": 1.0, "accuracy": 0.0}
    # The cross-task layout rule applies: the no-think format is wrong in thinking mode.
    assert rewards.score("<answer>3</answer>", "counting", 3, thinking=True) == {
        "format": 0.0, "accuracy": 1.0}
    assert rewards.format_reward("<answer>3</answer>", "counting", thinking=False) == 1.0


def test_toy_reward_functions_for_trl(counting: VideoTask) -> None:
    funcs = rewards.make_reward_funcs(thinking=True, weights={"counting": {"accuracy": 2.0}})
    assert [f.__name__ for f in funcs] == ["format", "iou", "accuracy"]
    completions = [think("3"), think("B"), [{"role": "assistant", "content": think("5")}]]
    columns = {"task": ["counting", "mcq", "counting"],
                "solution": ["3", json.dumps({"answer": "B"}), "4"]}
    values = {f.__name__: f([None] * 3, completions, **columns) for f in funcs}
    assert values == {
        "format": [1.0, 1.0, 1.0],
        "iou": [None, None, None],  # no iou for counting or mcq
        "accuracy": [2.0, 1.0, 0.0],
    }
    with pytest.raises(ValueError, match="does not apply to task 'counting'"):
        rewards.make_reward_funcs(thinking=True, weights={"counting": {"iou": 1.0}})


def test_toy_reference_answer_scores_full_marks(counting: VideoTask) -> None:
    for thinking in (True, False):
        answer = reference_answer("counting", 7, thinking=thinking)
        assert answer == (REFERENCE_THOUGHT if thinking else "") + "<answer>7</answer>"
        assert rewards.score(answer, "counting", "7", thinking=thinking) == {
            "format": 1.0, "accuracy": 1.0}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_videorft_score_reports_the_toy_task(counting: VideoTask, tmp_path: Path) -> None:
    rows = [
        {"id": "toy/1", "task": "counting", "completion": think("3"), "solution": 3},
        {"id": "toy/2", "task": "counting", "completion": think("2"), "solution": "2"},
        {"id": "toy/3", "task": "counting", "completion": think("two"), "solution": 2},
        {"id": "toy/4", "task": "counting", "completion": "<answer>5</answer>", "solution": 5},
        {"id": "mcq/1", "task": "mcq", "completion": think("B"), "solution": "B"},
    ]
    predictions = write_jsonl(tmp_path / "predictions.jsonl", rows)
    out, per_item = tmp_path / "metrics.json", tmp_path / "items.jsonl"
    runner = CliRunner()
    result = runner.invoke(app, ["score", str(predictions), "--json", "--out", str(out),
                                 "--per-item", str(per_item)])
    assert result.exit_code == 0, result.output
    expected = {"mcq": {"accuracy": 1.0, "format": 1.0, "count": 1},
                "counting": {"accuracy": 0.75, "format": 0.75, "count": 4}}
    assert json.loads(result.stdout) == json.loads(out.read_text()) == expected
    assert list(json.loads(out.read_text())) == ["mcq", "counting"]  # canonical tasks first
    items = [json.loads(line) for line in per_item.read_text().splitlines()]
    assert [(i["format"], i["iou"], i["accuracy"]) for i in items[:4]] == [
        (1.0, None, 1.0), (1.0, None, 1.0), (1.0, None, 0.0), (0.0, None, 1.0)]

    table = runner.invoke(app, ["score", str(predictions)])
    assert table.exit_code == 0, table.output
    assert "counting" in table.stdout and "accuracy 75.0" in table.stdout


def test_videorft_score_refuses_a_bad_toy_truth(counting: VideoTask, tmp_path: Path) -> None:
    predictions = write_jsonl(tmp_path / "predictions.jsonl", [
        {"id": "toy/1", "task": "counting", "completion": think("3"), "solution": 3},
        {"id": "toy/2", "task": "counting", "completion": think("3"), "solution": "many"},
    ])
    result = CliRunner().invoke(app, ["score", str(predictions)])
    assert result.exit_code == 1
    assert "line 2" in result.output
    assert "counting solution must be an integer >= 0, got 'many'" in result.output
    assert "Traceback" not in result.output


def _never(problem: str) -> NoReturn:
    raise AssertionError(problem)


def test_the_toy_task_needs_no_other_file(counting: VideoTask) -> None:
    """The scorer's truth rule and per-item metrics come from the task object alone."""
    assert counting.normalise_solution("4", _never) == 4
    assert counting.item_values([{"accuracy": 1.0}, {"accuracy": 0.0}]) == {
        "accuracy": [1.0, 0.0]}
    assert scoring.item_values("counting", [{"accuracy": 1.0}]) == {"accuracy": [1.0]}
