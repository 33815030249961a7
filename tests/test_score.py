"""Scoring predictions: metrics computed by hand, clear errors, the `videorft score` command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from videorft.cli import app
from videorft.errors import DataValidationError
from videorft.evaluation.scoring import (
    METRICS,
    aggregate,
    parse_prediction,
    read_predictions,
    score_file,
    score_item,
    score_predictions,
)
from videorft.records import TASKS

runner = CliRunner()


def think(answer: str, glue: str | None = None) -> str:
    """A completion in the thinking format."""
    text = f"<think>I looked at the video.</think> <answer>{answer}</answer>"
    return text if glue is None else f"{text}<glue>{glue}</glue>"


TRUE_BOX = [0.0, 0.0, 0.5, 0.5]
HALF_BOX = "[0, 0, 0.25, 0.5]"  # inside TRUE_BOX, half its area: IoU 0.5
SHIFTED_BOX = "[0.25, 0, 0.75, 0.5]"  # overlap 0.125, union 0.375: IoU 1/3


def boxes(*texts: str) -> str:
    return "[" + ", ".join(texts) + "]"


# Each row: the prediction, then its expected (format with think, format without, iou, accuracy).
CASES: list[tuple[dict[str, Any], tuple[float, float, float | None, float | None]]] = [
    # temporal grounding ------------------------------------------------------------------
    # 3.5 / 5 = 0.7 exactly on paper; in floats 0.6999999999999998, still counted at R@0.7
    (
        {"id": "tg/1", "task": "temporal_grounding", "source": "charades",
         "completion": think("3.3 to 6.8"), "solution": [3.3, 8.3]},
        (1.0, 0.0, 0.7, None),
    ),
    # [4, 8] vs [2, 6]: overlap 2, union 6
    (
        {"id": "tg/2", "task": "temporal_grounding", "completion": think("From 4 to 8 seconds."),
         "solution": [2, 6]},
        (1.0, 0.0, 1 / 3, None),
    ),
    # reversed prediction: IoU 0 (format is still fine)
    (
        {"id": "tg/3", "task": "temporal_grounding", "completion": think("5 to 3"),
         "solution": [0, 10]},
        (1.0, 0.0, 0.0, None),
    ),
    # unparsable output; solution JSON-encoded as the trainer stores it
    (
        {"id": "tg/4", "task": "temporal_grounding", "completion": "I cannot tell.",
         "solution": "[0, 10]"},
        (0.0, 0.0, 0.0, None),
    ),
    # tracking ------------------------------------------------------------------------------
    # 4 exact boxes + 4 half boxes: mean IoU (4 * 1 + 4 * 0.5) / 8 = 0.75
    (
        {"id": "trk/1", "task": "tracking",
         "completion": think(boxes(*[json.dumps(TRUE_BOX)] * 4, *[HALF_BOX] * 4)),
         "solution": [TRUE_BOX] * 8},
        (1.0, 0.0, 0.75, None),
    ),
    # 7 boxes: format 0, IoU 0
    (
        {"id": "trk/2", "task": "tracking", "completion": think(boxes(*[HALF_BOX] * 7)),
         "solution": [TRUE_BOX] * 8},
        (0.0, 0.0, 0.0, None),
    ),
    # no-think format, every box shifted: IoU 1/3; solution as a JSON-encoded {"answer": boxes}
    (
        {"id": "trk/3", "task": "tracking",
         "completion": f"<answer>{boxes(*[SHIFTED_BOX] * 8)}</answer>",
         "solution": json.dumps({"answer": [TRUE_BOX] * 8})},
        (0.0, 1.0, 1 / 3, None),
    ),
    # grounded QA ("(C)" truth form) -----------------------------------------------------------
    (
        {"id": "gqa/1", "task": "grounded_qa",
         "completion": think("The answer is C", "[(2, 4)]"),
         "solution": {"answer": "(C)", "glue": [[2, 4]]}},
        (1.0, 0.0, 1.0, 1.0),
    ),
    # wrong letter; glue [3, 5] vs [2, 4]: overlap 1, union 3
    (
        {"id": "gqa/2", "task": "grounded_qa", "completion": think("B", "[[3, 5]]"),
         "solution": json.dumps({"answer": "(C)", "glue": [[2, 4]]})},
        (1.0, 0.0, 1 / 3, 0.0),
    ),
    # empty predicted glue: format 0, glue IoU 0; the no-think answer is still right
    (
        {"id": "gqa/3", "task": "grounded_qa", "completion": "<answer>C</answer><glue>[]</glue>",
         "solution": {"answer": "C", "glue": [[2, 4]]}},
        (0.0, 0.0, 0.0, 1.0),
    ),
    # multiple choice (bare-letter solutions) ---------------------------------------------------
    (
        {"id": "mcq/1", "task": "mcq", "completion": think("(B)"), "solution": "B"},
        (1.0, 0.0, None, 1.0),
    ),
    (
        {"id": "mcq/2", "task": "mcq", "completion": "<answer>Answer: B</answer>",
         "solution": {"answer": "B"}, "model": "tiny"},
        (0.0, 1.0, None, 1.0),
    ),
    (
        {"id": "mcq/3", "task": "mcq", "completion": "", "solution": "(A)"},
        (0.0, 0.0, None, 0.0),
    ),
]  # fmt: skip

# The table metrics, by hand from the values above.
EXPECTED = {
    "temporal_grounding": {
        "miou": (0.7 + 1 / 3 + 0 + 0) / 4,
        "r@0.3": 2 / 4,
        "r@0.5": 1 / 4,
        "r@0.7": 1 / 4,
        "count": 4,
    },
    "tracking": {"ao": (0.75 + 0 + 1 / 3) / 3, "sr@0.5": 1 / 3, "sr@0.75": 1 / 3, "count": 3},
    "grounded_qa": {"accuracy": 2 / 3, "miou": (1 + 1 / 3 + 0) / 3, "count": 3},
    "mcq": {"accuracy": 2 / 3, "count": 3},
}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def predictions(tmp_path: Path) -> Path:
    rows = [row for row, _ in CASES]
    path = write_jsonl(tmp_path / "predictions.jsonl", rows)
    # a blank line in the middle is skipped
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + "\n" + "".join(lines[2:]))
    return path


# Each task's share of answers in format, by hand from the same values: with think tags, then
# without (the content metrics above are the same either way).
FORMAT_SHARES = {
    True: {"temporal_grounding": 3 / 4, "tracking": 1 / 3, "grounded_qa": 2 / 3, "mcq": 1 / 3},
    False: {"temporal_grounding": 0.0, "tracking": 1 / 3, "grounded_qa": 0.0, "mcq": 1 / 3},
}


def assert_metrics(metrics: dict[str, dict[str, float]], *, thinking: bool = True) -> None:
    assert list(metrics) == list(TASKS)
    for task, expected in EXPECTED.items():
        assert list(metrics[task]) == [*METRICS[task], "format", "count"]
        expected = {**expected, "format": FORMAT_SHARES[thinking][task]}
        assert metrics[task] == pytest.approx(expected, abs=1e-12), task
        assert metrics[task]["count"] == expected["count"]


# --------------------------------------------------------------------------------------------
# Hand-computed scores
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("thinking", [True, False])
def test_per_item_scores_match_hand_values(predictions: Path, thinking: bool) -> None:
    items = read_predictions(predictions)
    assert [item["id"] for item in items] == [row["id"] for row, _ in CASES]
    for item, (row, (fmt_think, fmt_plain, iou, accuracy)) in zip(items, CASES, strict=True):
        scored = score_item(item, thinking=thinking)
        expected = {
            "id": row["id"],
            "task": row["task"],
            "format": fmt_think if thinking else fmt_plain,
            "iou": iou,
            "accuracy": accuracy,
        }
        if "source" in row:
            expected["source"] = row["source"]
        assert scored == pytest.approx(expected, abs=1e-12), row["id"]
        for key in ("iou", "accuracy"):
            assert (scored[key] is None) == (expected[key] is None)


def test_metrics_match_hand_values_and_ignore_the_format(predictions: Path) -> None:
    with_think, items_think = score_predictions(read_predictions(predictions), thinking=True)
    no_think, items_plain = score_predictions(read_predictions(predictions), thinking=False)
    assert_metrics(with_think)
    assert_metrics(no_think, thinking=False)  # table metrics judge content, not tags
    formats = [(a["format"], b["format"]) for a, b in zip(items_think, items_plain, strict=True)]
    assert formats == [(think_fmt, plain_fmt) for _, (think_fmt, plain_fmt, _, _) in CASES]


def test_solutions_are_normalised_and_extra_keys_kept(predictions: Path) -> None:
    items = {item["id"]: item for item in read_predictions(predictions)}
    assert items["tg/4"]["solution"] == [0.0, 10.0]
    assert items["trk/3"]["solution"] == [TRUE_BOX] * 8
    assert items["gqa/1"]["solution"] == {"answer": "C", "glue": [[2.0, 4.0]]}
    assert items["gqa/2"]["solution"] == {"answer": "C", "glue": [[2.0, 4.0]]}
    assert items["mcq/1"]["solution"] == {"answer": "B"}
    assert items["mcq/3"]["solution"] == {"answer": "A"}
    assert items["mcq/2"]["model"] == "tiny"
    assert items["tg/1"]["source"] == "charades"
    assert parse_prediction(
        {"id": "m", "task": "mcq", "completion": "x", "solution": '"(c)"'}, line=1, file="f"
    )["solution"] == {"answer": "C"}


def test_tasks_without_items_are_absent() -> None:
    only_mcq = [{"id": "a", "task": "mcq", "format": 1.0, "iou": None, "accuracy": 1.0}]
    assert aggregate(only_mcq) == {"mcq": {"accuracy": 1.0, "format": 1.0, "count": 1}}
    assert aggregate([]) == {}


def test_score_file_writes_metrics_and_per_item(predictions: Path, tmp_path: Path) -> None:
    out, per_item = tmp_path / "out" / "metrics.json", tmp_path / "out" / "items.jsonl"
    metrics = score_file(predictions, thinking=True, out=out, per_item=per_item)
    assert_metrics(metrics)
    assert json.loads(out.read_text()) == metrics
    rows = [json.loads(line) for line in per_item.read_text().splitlines()]
    assert [row["id"] for row in rows] == [row["id"] for row, _ in CASES]
    assert rows[0] == {
        "id": "tg/1",
        "task": "temporal_grounding",
        "format": 1.0,
        "iou": pytest.approx(0.7),
        "accuracy": None,
        "source": "charades",
    }
    assert rows[-1] == {"id": "mcq/3", "task": "mcq", "format": 0.0, "iou": None, "accuracy": 0.0}
    assert sorted(p.name for p in out.parent.iterdir()) == ["items.jsonl", "metrics.json"]


def test_score_file_refuses_to_overwrite_its_input_or_an_empty_file(
    predictions: Path, tmp_path: Path
) -> None:
    before = predictions.read_text()
    with pytest.raises(DataValidationError, match="overwrite the predictions"):
        score_file(predictions, thinking=True, out=predictions)
    assert predictions.read_text() == before
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataValidationError, match="no predictions"):
        score_file(empty, thinking=True)


# --------------------------------------------------------------------------------------------
# Errors name the file and line
# --------------------------------------------------------------------------------------------

GOOD = {"id": "ok", "task": "mcq", "completion": "<answer>A</answer>", "solution": "A"}


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + '{"id": "x", "task": \n')
    with pytest.raises(DataValidationError, match=r"line 3: not valid JSON") as err:
        read_predictions(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({**GOOD, "task": "captioning"}, "unknown task 'captioning'"),
        ({k: v for k, v in GOOD.items() if k != "completion"}, "missing field.*completion"),
        ({k: v for k, v in GOOD.items() if k != "solution"}, "missing field.*solution"),
        ({**GOOD, "id": ""}, "id must be a non-empty string"),
        ({**GOOD, "completion": 3}, "completion must be a string"),
        ({**GOOD, "solution": "H"}, "option letter"),
        (
            {"id": "t", "task": "temporal_grounding", "completion": "", "solution": [5, 3]},
            "impossible span",
        ),
        (
            {"id": "t", "task": "temporal_grounding", "completion": "", "solution": "[1, NaN]"},
            "finite numbers",
        ),
        (
            {"id": "t", "task": "tracking", "completion": "", "solution": [TRUE_BOX] * 7},
            "exactly 8 boxes, got 7",
        ),
        (
            {"id": "t", "task": "tracking", "completion": "", "solution": [[0, 0, 1]] * 8},
            r"solution box 0 must be \[x0, y0, x1, y1\]",
        ),
        (
            {"id": "t", "task": "grounded_qa", "completion": "", "solution": {"answer": "A"}},
            "glue must be a non-empty list",
        ),
        (
            {
                "id": "t",
                "task": "grounded_qa",
                "completion": "",
                "solution": {"answer": "A", "glue": [[1, 2], [4, 3]]},
            },
            r"impossible span solution.glue\[1\]",
        ),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_invalid_prediction_names_file_and_line(tmp_path: Path, bad: Any, message: str) -> None:
    path = write_jsonl(tmp_path / "preds.jsonl", [GOOD, bad])
    with pytest.raises(DataValidationError, match=f"line 2: .*{message}") as err:
        read_predictions(path)
    assert str(err.value).startswith(str(path))


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    other = {**GOOD, "id": "other"}
    path = write_jsonl(tmp_path / "preds.jsonl", [GOOD, other, GOOD])
    with pytest.raises(DataValidationError, match=r"line 3: duplicate id \(first on line 1\)"):
        read_predictions(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="file not found"):
        read_predictions(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------


def test_cli_score_writes_files_and_prints(predictions: Path, tmp_path: Path) -> None:
    out, per_item = tmp_path / "metrics.json", tmp_path / "items.jsonl"
    result = runner.invoke(
        app, ["score", str(predictions), "--out", str(out), "--per-item", str(per_item)]
    )
    assert result.exit_code == 0, result.output
    assert "temporal_grounding" in result.stdout and "miou 25.8" in result.stdout
    assert "in format" in result.stdout
    assert_metrics(json.loads(out.read_text()))
    formats = [json.loads(line)["format"] for line in per_item.read_text().splitlines()]
    assert formats == [think_fmt for _, (think_fmt, _, _, _) in CASES]

    plain = runner.invoke(
        app, ["score", str(predictions), "--no-think", "--json", "--per-item", str(per_item)]
    )
    assert plain.exit_code == 0, plain.output
    assert_metrics(json.loads(plain.stdout), thinking=False)
    formats = [json.loads(line)["format"] for line in per_item.read_text().splitlines()]
    assert formats == [plain_fmt for _, (_, plain_fmt, _, _) in CASES]


def test_cli_score_bad_file_exits_1(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "preds.jsonl", [GOOD, {**GOOD, "task": "captioning"}])
    out = tmp_path / "metrics.json"
    result = runner.invoke(app, ["score", str(path), "--out", str(out)])
    assert result.exit_code == 1
    assert "line 2" in result.output and "unknown task 'captioning'" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# Property: metrics stay fractions whatever the model says
# --------------------------------------------------------------------------------------------

SOLUTIONS = {
    "temporal_grounding": [2.0, 6.0],
    "tracking": [TRUE_BOX] * 8,
    "grounded_qa": {"answer": "C", "glue": [[2, 4], [6, 9]]},
    "mcq": "B",
}
_number = st.floats(min_value=-1, max_value=12, allow_nan=False).map(lambda x: round(x, 2))
_span_text = st.tuples(_number, _number).map(lambda p: f"{abs(p[0])} to {abs(p[1])}")
_box_text = st.lists(_number.map(lambda x: x / 10), min_size=4, max_size=4).map(json.dumps)
_answer = st.one_of(
    st.text(max_size=30),
    _span_text,
    st.lists(_box_text, min_size=6, max_size=9).map(lambda b: "[" + ", ".join(b) + "]"),
    st.sampled_from(["A", "(B)", "The answer is C", "c", "none"]),
)
_completion = st.one_of(
    st.text(max_size=60),
    st.builds(think, _answer),
    st.builds(think, _answer, st.lists(st.tuples(_number, _number), max_size=3).map(str)),
)
_items = st.lists(st.tuples(st.sampled_from(TASKS), _completion), max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_items, thinking=st.booleans())
def test_aggregate_values_are_fractions_and_counts_add_up(
    rows: list[tuple[str, str]], thinking: bool
) -> None:
    items = [
        parse_prediction(
            {"id": str(i), "task": task, "completion": text, "solution": SOLUTIONS[task]},
            line=i + 1,
            file="generated.jsonl",
        )
        for i, (task, text) in enumerate(rows)
    ]
    metrics, per_item = score_predictions(items, thinking=thinking)
    assert len(per_item) == len(items)
    assert set(metrics) == {task for task, _ in rows}
    assert sum(values["count"] for values in metrics.values()) == len(items)
    for task, values in metrics.items():
        assert values["count"] == sum(t == task for t, _ in rows)
        assert list(values) == [*METRICS[task], "format", "count"]
        for name in METRICS[task]:
            assert isinstance(values[name], float)
            assert 0.0 <= values[name] <= 1.0
        if task == "temporal_grounding":  # R@k can only shrink as k grows
            assert values["r@0.3"] >= values["r@0.5"] >= values["r@0.7"]


def test_a_lone_surrogate_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """JSON can spell a lone surrogate, UTF-8 cannot: one error naming the line; neither
    --out nor --per-item is written (outputs are all written or none)."""
    path = tmp_path / "p.jsonl"
    good = {"id": "ok", "task": "temporal_grounding", "completion": "<answer>0 to 1</answer>",
            "solution": [0, 1]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "a\udc80"}) + "\n")
    out, per_item = tmp_path / "m.json", tmp_path / "items.jsonl"
    with pytest.raises(DataValidationError, match="line 2: a string holds a lone surrogate"):
        score_file(path, thinking=False, out=out, per_item=per_item)
    assert not out.exists() and not per_item.exists()
