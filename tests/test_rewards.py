"""Rule rewards: hand-computed values, the reference's parsing rules, TRL adapters, and fuzzing."""

from __future__ import annotations

import json
import math
import pickle
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from videorft import rewards
from videorft.rewards import (
    TASK_REWARDS,
    format_reward,
    glue_iou,
    make_reward_funcs,
    option_accuracy,
    score,
    temporal_iou,
    tracking_iou,
)
from videorft.video_tasks import common, temporal_grounding

TASKS = tuple(TASK_REWARDS)


def ans(body: str, think: str | None = None) -> str:
    return (f"<think>{think}</think>" if think is not None else "") + f"<answer>{body}</answer>"


def boxes_text(boxes: list[list[float]]) -> str:
    return "[" + ", ".join("[" + ", ".join(str(v) for v in box) + "]" for box in boxes) + "]"


TRUE_BOXES = [[0.0, 0.0, 0.5, 0.5]] * 8

# ---------------------------------------------------------------------------------- temporal IoU


@pytest.mark.parametrize(
    ("completion", "solution", "expected"),
    [
        (ans("3 to 7"), [2, 6], 3 / 5),  # overlap 3..6, hull 2..7
        (ans("2 and 4"), [2, 6], 2 / 4),  # "and" separator
        (ans("2 TO 6"), [2, 6], 1.0),  # case-insensitive, as the reference's code
        (ans("12.54 to 17.83"), [12.54, 17.83], 1.0),
        (ans("From 2.50 to 4.00 seconds"), [2, 6], 1.5 / 4),
        (ans("0 to 1"), [2, 6], 0.0),  # disjoint
        (ans("7 to 9"), [2, 6], 0.0),
        (ans("2 to 6"), "[2, 6]", 1.0),  # JSON-encoded solution
        (ans("2. to 6"), [2, 6], 1.0),  # "\d+\.?\d*" takes a trailing dot
    ],
)
def test_temporal_iou_hand_computed(completion: str, solution: Any, expected: float) -> None:
    assert temporal_iou(completion, solution) == pytest.approx(expected)


def test_temporal_iou_reads_the_last_answer_block() -> None:
    assert temporal_iou(ans("2 to 6") + ans("0 to 1"), [2, 6]) == 0.0
    assert temporal_iou(ans("0 to 1") + ans("2 to 6"), [2, 6]) == 1.0


def test_temporal_iou_takes_the_last_match_in_the_block() -> None:
    assert temporal_iou(ans("maybe 0 to 1, no: 4 to 6"), [2, 6]) == pytest.approx(0.5)
    assert temporal_iou(ans("maybe 4 to 6, no: 0 to 1"), [2, 6]) == 0.0


def test_temporal_iou_matches_do_not_overlap() -> None:
    # findall semantics: "1 to 2 to 3" holds one match, (1, 2); (2, 3) is never read.
    assert temporal_iou(ans("1 to 2 to 3"), [1, 2]) == 1.0
    assert temporal_iou(ans("1 to 2 to 3"), [2, 3]) == 0.0


def test_temporal_iou_ignores_timing_text_outside_answer_tags() -> None:
    assert temporal_iou("<think>2 to 6</think>", [2, 6]) == 0.0
    assert temporal_iou("2 to 6", [2, 6]) == 0.0


@pytest.mark.parametrize(
    "body", ["two to six", "2-6", "2 to", "to 6", "2  to 6", "2 through 6", "[2, 6]", ""]
)
def test_temporal_iou_unparsable_is_zero(body: str) -> None:
    assert temporal_iou(ans(body), [2, 6]) == 0.0


def test_temporal_iou_reversed_prediction_scores_zero() -> None:
    # Decision: 0, which is also what the reference's formula yields for a reversed span.
    assert temporal_iou(ans("6 to 2"), [2, 6]) == 0.0
    assert temporal_iou(ans("5 to 3"), [0, 10]) == 0.0
    # The swapped interval would have scored; the 0 comes from the order alone.
    assert temporal_iou(ans("3 to 5"), [0, 10]) == pytest.approx(0.2)


def test_temporal_iou_reads_negative_times_without_sign() -> None:
    # The reference's "\d+" has no sign: "-3 to 5" reads as 3 to 5.
    assert temporal_iou(ans("-3 to 5"), [3, 5]) == 1.0


def test_temporal_iou_degenerate_spans() -> None:
    assert temporal_iou(ans("3 to 3"), [3, 3]) == 0.0  # zero union: 0, not a division error
    assert temporal_iou(ans("3 to 3"), [2, 6]) == 0.0
    assert temporal_iou(ans("2 to 6"), [4, 4]) == 0.0
    assert temporal_iou(ans("2 to 6"), [6, 2]) == 0.0  # reversed truth (invalid record)


@pytest.mark.parametrize("solution", [None, [], [1], [1, 2, 3], ["a", "b"], "garbage", {"x": 1}])
def test_temporal_iou_bad_solution_is_zero(solution: Any) -> None:
    assert temporal_iou(ans("1 to 2"), solution) == 0.0


def test_temporal_iou_huge_numbers_score_zero() -> None:
    assert temporal_iou(ans("1 to " + "9" * 5000), [1, 2]) == 0.0  # float -> inf
    assert temporal_iou(ans("0 to " + "9" * 300), [0, 1]) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------- tracking


def test_tracking_exact_boxes_score_one() -> None:
    completion = ans(boxes_text(TRUE_BOXES))
    assert tracking_iou(completion, TRUE_BOXES) == 1.0
    assert format_reward(completion, "tracking", thinking=False) == 1.0


@pytest.mark.parametrize("count", [0, 1, 7, 9])
def test_tracking_wrong_box_count_scores_zero(count: int) -> None:
    completion = ans(boxes_text([[0.0, 0.0, 0.5, 0.5]] * count))
    assert tracking_iou(completion, TRUE_BOXES) == 0.0
    assert format_reward(completion, "tracking", thinking=False) == 0.0
    # The same completion with the tag structure alone passes the mcq format check.
    assert format_reward(completion, "mcq", thinking=False) == 1.0


def test_tracking_partial_overlap_hand_computed() -> None:
    # [0.25, 0.75]^2 vs [0, 0.5]^2: intersection 0.0625, union 0.25 + 0.25 - 0.0625 = 0.4375.
    shifted = ans(boxes_text([[0.25, 0.25, 0.75, 0.75]] * 8))
    assert tracking_iou(shifted, TRUE_BOXES) == pytest.approx(0.0625 / 0.4375)
    # Four exact pairs and four disjoint ones average to 0.5.
    half = ans(boxes_text([[0.0, 0.0, 0.5, 0.5]] * 4 + [[0.6, 0.6, 0.9, 0.9]] * 4))
    assert tracking_iou(half, TRUE_BOXES) == pytest.approx(0.5)
    # Half-width box inside the truth: 0.125 / 0.25.
    inner = ans(boxes_text([[0.0, 0.0, 0.25, 0.5]] * 8))
    assert tracking_iou(inner, TRUE_BOXES) == pytest.approx(0.5)


def test_tracking_inverted_or_degenerate_predicted_box_scores_zero_for_its_pair() -> None:
    inverted = ans(boxes_text([[0.5, 0.5, 0.0, 0.0]] + [[0.0, 0.0, 0.5, 0.5]] * 7))
    assert tracking_iou(inverted, TRUE_BOXES) == pytest.approx(7 / 8)
    flat = ans(boxes_text([[0.1, 0.1, 0.1, 0.4]] + [[0.0, 0.0, 0.5, 0.5]] * 7))
    assert tracking_iou(flat, TRUE_BOXES) == pytest.approx(7 / 8)
    # An inverted box is still a parsable list: format stays 1.
    assert format_reward(inverted, "tracking", thinking=False) == 1.0


def test_tracking_number_syntax() -> None:
    text = "[" + ", ".join(["[0, 0.0, 5e-1, +0.50]"] * 7 + ["[-0.0, .0, 0.5E0, 0.5]"]) + "]"
    assert tracking_iou(ans(text), TRUE_BOXES) == 1.0
    negative = ans(boxes_text([[-0.5, -0.5, 0.5, 0.5]] * 8))  # 0.25 / 1.0, not clipped
    assert tracking_iou(negative, TRUE_BOXES) == pytest.approx(0.25)
    spaced = ans("[\n" + ",\n".join(["  [ 0 , 0 , 0.5 , 0.5 ]"] * 8) + ",\n]")  # trailing comma
    assert tracking_iou(spaced, TRUE_BOXES) == 1.0


@pytest.mark.parametrize(
    "body",
    [
        "(" + ", ".join(["(0, 0, 0.5, 0.5)"] * 8) + ")",  # tuples, not lists
        "[" + ", ".join(["[0.1+0.1, 0, 0.5, 0.5]"] * 8) + "]",  # an expression
        "[" + ", ".join(["[0, 0, 0.5]"] * 8) + "]",  # three numbers
        "[" + ", ".join(["[0, 0, 0.5, 0.5, 1]"] * 8) + "]",  # five numbers
        "[" + ", ".join(["[0, 0, 0.5, 0.5]"] * 7 + ["[0, 0, 1e400, 0.5]"]) + "]",  # inf
        "[" + ", ".join(["[0, 0, 0.5, 0.5]"] * 7 + ["[0, 0, nan, 0.5]"]) + "]",
        "[" + ", ".join(["[0, 0, 0.5, 0.5]"] * 7 + ["[0, 0, " + "9" * 5000 + ", 0.5]"]) + "]",
        "__import__('os').system('true')",
        "[[0, 0, 0.5, 0.5]] * 8",
    ],
)
def test_tracking_invalid_lists_score_zero(body: str) -> None:
    assert tracking_iou(ans(body), TRUE_BOXES) == 0.0
    assert format_reward(ans(body), "tracking", thinking=False) == 0.0


def test_tracking_overflowing_areas_stay_in_range() -> None:
    # Finite coordinates whose areas overflow: inf - inf would give NaN; the reward gives 0.
    huge = [[-1e308, -1e308, 1e308, 1e308]] * 8
    assert tracking_iou(ans(boxes_text(huge)), huge) == 0.0
    assert tracking_iou(ans(boxes_text(huge)), TRUE_BOXES) == 0.0


def test_tracking_solution_forms() -> None:
    completion = ans(boxes_text(TRUE_BOXES))
    assert tracking_iou(completion, json.dumps(TRUE_BOXES)) == 1.0
    assert tracking_iou(completion, {"answer": TRUE_BOXES}) == 1.0  # the reference's form
    assert tracking_iou(completion, TRUE_BOXES[:7]) == 0.0
    assert tracking_iou(completion, [[0, 0, 0, 0]] * 8) == 0.0  # zero-area truth
    assert tracking_iou(completion, "not json") == 0.0


# ---------------------------------------------------------------------------------- glue IoU


def gqa(glue: str, answer: str = "C", think: str | None = "t") -> str:
    return ans(answer, think) + f"<glue>{glue}</glue>"


GQA_SOL = {"answer": "C", "glue": [[2.0, 6.0]]}


@pytest.mark.parametrize(
    ("glue", "solution_glue", "expected"),
    [
        ("[(2, 6)]", [[2, 6]], 1.0),
        ("[[2, 6]]", [[2, 6]], 1.0),  # list pairs accepted too
        ("[(3, 7)]", [[2, 6]], 3 / 5),
        # Overlapping predictions merge into (1, 5): 3 / 5. Unmerged they would count 1 + 3.
        ("[(1, 3), (2, 5)]", [[2, 6]], 3 / 5),
        # Overlapping truths merge into (0, 6): the prediction covers it exactly.
        ("[(0, 6)]", [[0, 4], [2, 6]], 1.0),
        # Two truth pieces, one prediction across the gap: 2 / (4 + 4 - 2).
        ("[(1, 5)]", [[0, 2], [4, 6]], 2 / 6),
        ("[(0, 2), (2, 4)]", [[0, 4]], 1.0),  # touching spans
        ("[(0, 2), (4, 6)]", [[0, 2], [4, 6]], 1.0),
        ("[(7, 9)]", [[2, 6]], 0.0),
        ("[(2, 2)]", [[2, 6]], 0.0),  # zero-length prediction
    ],
)
def test_glue_iou_hand_computed(glue: str, solution_glue: list, expected: float) -> None:
    solution = {"answer": "C", "glue": solution_glue}
    assert glue_iou(gqa(glue), solution) == pytest.approx(expected)
    assert glue_iou(gqa(glue), json.dumps(solution)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "glue",
    [
        "[]",
        "",
        "(2, 6)",
        "[(6, 2)]",
        "[(2, 6), (5, 1)]",
        "[(2, 6, 7)]",
        "[(-1, 6)]",
        "[(2, 1e400)]",
        "2 to 6",
        "[(2, 6)",
    ],
)
def test_glue_invalid_scores_zero_and_fails_format(glue: str) -> None:
    assert glue_iou(gqa(glue), GQA_SOL) == 0.0
    assert format_reward(gqa(glue), "grounded_qa", thinking=True) == 0.0


def test_glue_reads_last_glue_block() -> None:
    completion = gqa("[(7, 9)]") + "<glue>[(2, 6)]</glue>"
    assert glue_iou(completion, GQA_SOL) == 1.0
    # The format check parses the same (last) block the IoU reads.
    assert format_reward(gqa("soon") + "<glue>[(2, 6)]</glue>", "grounded_qa", thinking=True) == 1.0
    assert format_reward(gqa("[(2, 6)]") + "<glue>soon</glue>", "grounded_qa", thinking=True) == 0.0


@pytest.mark.parametrize(
    "solution",
    [{"answer": "C"}, {"answer": "C", "glue": []}, None, "x", {"answer": "C", "glue": [[6, 2]]}],
)
def test_glue_bad_solution_is_zero(solution: Any) -> None:
    assert glue_iou(gqa("[(2, 6)]"), solution) == 0.0


# ---------------------------------------------------------------------------------- option letter


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("C", "C"),
        ("The answer is C", "C"),
        ("The correct answer is C.", "C"),
        ("The best answer is B", "B"),  # "Best" holds a capital B, but not as a standalone token
        ("Best option: B", "B"),
        ("Answer: c", "C"),  # a lone lowercase letter is a letter
        ("answer: (c)", "C"),
        ("c", "C"),
        ("(C) because the dog ran", "C"),
        ("(c) because the dog ran", "C"),  # bracketed lowercase
        ("Option D", "D"),
        ("I think it's B", "B"),  # "I" is no option letter
        ("A dog", "A"),  # first standalone token A-G: documented rule
        ("**Answer:** E", "E"),
        (" \n (F)\n", "F"),
    ],
)
def test_option_letter_extraction(body: str, expected: str) -> None:
    for letter in "ABCDEFG":
        assert option_accuracy(ans(body), {"answer": letter}) == float(letter == expected)


@pytest.mark.parametrize(
    "body",
    ["a dog", "the answer is a cat", "Because", "none of them", "H", "", "Answer:"],
)
def test_option_letter_not_found_scores_zero(body: str) -> None:
    assert all(option_accuracy(ans(body), {"answer": letter}) == 0.0 for letter in "ABCDEFG")


def test_option_accuracy_solution_forms_and_last_block() -> None:
    assert option_accuracy(ans("C"), {"answer": "(C)"}) == 1.0
    assert option_accuracy(ans("C"), '{"answer": "C"}') == 1.0
    assert option_accuracy(ans("C"), "C") == 1.0
    assert option_accuracy(ans("C"), {"answer": "H"}) == 0.0
    assert option_accuracy(ans("C"), {"answer": 3}) == 0.0
    assert option_accuracy(ans("A") + ans("C"), {"answer": "C"}) == 1.0
    assert option_accuracy(ans("C") + ans("A"), {"answer": "C"}) == 0.0
    assert option_accuracy("C", {"answer": "C"}) == 0.0  # no answer block


# ---------------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("completion", "thinking", "expected"),
    [
        ("<think>x</think>\n<answer>2 to 3</answer>", True, 1.0),
        ("<think>x</think>\n<answer>2 to 3</answer>", False, 0.0),
        ("<answer>2 to 3</answer>", False, 1.0),
        ("<answer>2 to 3</answer>", True, 0.0),
        ("  \n<answer>2 to 3</answer>\n ", False, 1.0),  # stripped
        ("Sure! <answer>2 to 3</answer>", False, 0.0),
        ("<answer>2 to 3</answer> done", False, 0.0),
        ("<think>x</think> hmm <answer>2 to 3</answer>", True, 0.0),
        ("<think>\nmulti\nline\n</think><answer>\n2 to 3\n</answer>", True, 1.0),  # DOTALL
        ("<think></think><answer></answer>", True, 1.0),  # empty blocks: tags are all it checks
        ("<answer>2 to 3", False, 0.0),  # unclosed
        ("<think>x<answer>2 to 3</answer>", True, 0.0),
        # Nested and duplicated tags fullmatch the reference's regex, so they pass.
        ("<answer><answer>1 to 2</answer></answer>", False, 1.0),
        ("<answer>1 to 2</answer><answer>3 to 4</answer>", False, 1.0),
        ("<think>a</think><think>b</think><answer>1 to 2</answer>", True, 1.0),
    ],
)
def test_format_tag_structure(completion: str, thinking: bool, expected: float) -> None:
    for task in ("temporal_grounding", "mcq"):
        assert format_reward(completion, task, thinking=thinking) == expected


def test_nested_answer_tags_read_like_the_reference() -> None:
    # findall's first (and only) block is "<answer>1 to 2": its timing still parses.
    assert temporal_iou("<answer><answer>1 to 2</answer></answer>", [1, 2]) == 1.0


def test_format_grounded_qa_needs_parsable_glue() -> None:
    assert format_reward(gqa("[(5.2, 10.4)]"), "grounded_qa", thinking=True) == 1.0
    assert format_reward(gqa("[(5.2, 10.4)]", think=None), "grounded_qa", thinking=False) == 1.0
    assert format_reward(gqa("[(5.2, 10.4)]", think=None), "grounded_qa", thinking=True) == 0.0
    no_glue = ans("C", "t")
    assert format_reward(no_glue, "grounded_qa", thinking=True) == 0.0
    assert format_reward(no_glue, "mcq", thinking=True) == 1.0
    assert format_reward(gqa("around five seconds"), "grounded_qa", thinking=True) == 0.0
    spaced = "<think>t</think>\n<answer>C</answer>\n<glue>[(1, 2), (3, 4)]</glue>"
    assert format_reward(spaced, "grounded_qa", thinking=True) == 1.0
    glue_first = "<think>t</think><glue>[(1, 2)]</glue><answer>C</answer>"
    assert format_reward(glue_first, "grounded_qa", thinking=True) == 0.0


def test_format_prompt_examples_pass() -> None:
    # The answers the prompts in videorft/prompts.py show as examples.
    assert (
        format_reward("<answer>A</answer><glue>[(5.2, 10.4)]</glue>", "grounded_qa", thinking=False)
        == 1.0
    )
    assert format_reward(ans("12.54 to 17.83"), "temporal_grounding", thinking=False) == 1.0


def test_format_unknown_task_raises() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        format_reward(ans("A"), "captioning", thinking=False)
    with pytest.raises(ValueError, match="unknown task"):
        score(ans("A"), "captioning", {"answer": "A"}, thinking=False)


# ---------------------------------------------------------------------------------- score


def test_score_components_and_totals() -> None:
    tg = score(ans("3 to 7", "t"), "temporal_grounding", [2, 6], thinking=True)
    assert tg == {"format": 1.0, "iou": pytest.approx(0.6)}
    track = score(ans(boxes_text(TRUE_BOXES)), "tracking", TRUE_BOXES, thinking=False)
    assert track == {"format": 1.0, "iou": 1.0}
    full = score(gqa("[(2, 6)]"), "grounded_qa", GQA_SOL, thinking=True)
    assert full == {"format": 1.0, "iou": 1.0, "accuracy": 1.0}
    assert sum(full.values()) == 3.0
    mcq = score(ans("B"), "mcq", {"answer": "B"}, thinking=True)
    assert mcq == {"format": 0.0, "accuracy": 1.0}  # no think block in thinking mode
    for task in TASKS:
        assert tuple(score("", task, None, thinking=False)) == TASK_REWARDS[task]


# ---------------------------------------------------------------------------------- TRL adapters

BATCH_TASKS = ["temporal_grounding", "mcq", "grounded_qa", "tracking"]
BATCH_SOLUTIONS: list[Any] = [[2, 6], {"answer": "B"}, GQA_SOL, TRUE_BOXES]
BATCH_COMPLETIONS = [
    ans("3 to 7"),
    ans("B"),
    ans("A", None) + "<glue>[(2, 6)]</glue>",
    ans(boxes_text(TRUE_BOXES)),
]


def call_all(funcs: list, completions: list, solutions: list | None = None) -> dict[str, list]:
    return {
        f.__name__: f(
            prompts=["p"] * len(completions),
            completions=completions,
            task=BATCH_TASKS,
            solution=solutions or BATCH_SOLUTIONS,
            completion_ids=[[1]] * len(completions),  # extra keys TRL passes are ignored
            trainer_state=None,
        )
        for f in funcs
    }


def test_reward_funcs_names_and_values() -> None:
    funcs = make_reward_funcs(thinking=False)
    assert [f.__name__ for f in funcs] == ["format", "iou", "accuracy"]
    out = call_all(funcs, BATCH_COMPLETIONS)
    assert out["format"] == [1.0, 1.0, 1.0, 1.0]
    assert out["iou"] == [pytest.approx(0.6), None, 1.0, 1.0]
    assert out["accuracy"] == [None, 1.0, 0.0, None]


def test_reward_funcs_thinking_mode() -> None:
    out = call_all(make_reward_funcs(thinking=True), BATCH_COMPLETIONS)
    assert out["format"] == [0.0, 0.0, 0.0, 0.0]  # the batch has no <think> blocks
    assert out["iou"][0] == pytest.approx(0.6)  # content rewards do not depend on the mode


def test_reward_funcs_conversational_completions_and_json_solutions() -> None:
    conversational = [[{"role": "assistant", "content": c}] for c in BATCH_COMPLETIONS]
    conversational[1] = [{"role": "assistant", "content": [{"type": "text", "text": ans("B")}]}]
    json_solutions = [json.dumps(s) for s in BATCH_SOLUTIONS]
    plain = call_all(make_reward_funcs(thinking=False), BATCH_COMPLETIONS)
    assert call_all(make_reward_funcs(thinking=False), conversational, json_solutions) == plain


def test_reward_funcs_odd_completion_shapes_score_zero() -> None:
    funcs = make_reward_funcs(thinking=False)
    odd = [None, 3, [{"role": "user", "content": ans("B")}], {"content": ans("A")}]
    out = call_all(funcs, odd)
    assert out["format"] == [0.0, 0.0, 0.0, 0.0]


def test_reward_funcs_weights_apply_per_task() -> None:
    funcs = make_reward_funcs(
        thinking=False,
        weights={"temporal_grounding": {"iou": 2.0}, "mcq": {"format": 0.5}},
    )
    out = call_all(funcs, BATCH_COMPLETIONS)
    assert out["iou"] == [pytest.approx(1.2), None, 1.0, 1.0]
    assert out["format"] == [1.0, 0.5, 1.0, 1.0]
    assert out["accuracy"] == [None, 1.0, 0.0, None]


@pytest.mark.parametrize(
    "weights",
    [
        {"captioning": {"iou": 1.0}},
        {"mcq": {"iou": 1.0}},
        {"mcq": {"format": -1.0}},
        {"mcq": {"format": float("nan")}},
        {"mcq": {"format": "1"}},
    ],
)
def test_reward_funcs_reject_bad_weights(weights: dict) -> None:
    with pytest.raises(ValueError):
        make_reward_funcs(thinking=False, weights=weights)


def test_reward_funcs_refuse_missing_columns_and_unknown_tasks() -> None:
    (fmt, *_) = make_reward_funcs(thinking=False)
    with pytest.raises(ValueError, match="'task' and 'solution'"):
        fmt(prompts=["p"], completions=["x"], solution=[None])
    with pytest.raises(ValueError, match="1 completions"):
        fmt(prompts=["p"], completions=["x"], task=["mcq", "mcq"], solution=[None, None])
    with pytest.raises(ValueError, match="unknown task"):
        fmt(prompts=["p"], completions=["x"], task=["captioning"], solution=[None])


def test_reward_funcs_pickle() -> None:
    # Picklable for multi-process data/reward workers; the name survives.
    funcs = make_reward_funcs(thinking=True, weights={"mcq": {"accuracy": 2.0}})
    clones = pickle.loads(pickle.dumps(funcs))
    assert [c.__name__ for c in clones] == ["format", "iou", "accuracy"]
    assert call_all(clones, BATCH_COMPLETIONS) == call_all(funcs, BATCH_COMPLETIONS)


# ------------------------------------------------- equivalence with the reference's regexes

REF_SPAN = re.compile(r"(\d+\.?\d*) (to|and) (\d+\.?\d*)", re.IGNORECASE)
REF_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
SMALL = settings(max_examples=400, deadline=None)


@SMALL
@given(st.text(alphabet="0123456789. toandTOx-", max_size=40))
def test_span_pattern_equals_reference(text: str) -> None:
    assert temporal_grounding.SPAN_RE.findall(text) == REF_SPAN.findall(text)


@SMALL
@given(
    st.lists(
        st.sampled_from(["<answer>", "</answer>", "a", "<", ">", "/", "answer"]), max_size=12
    ).map("".join)
)
def test_last_block_equals_reference_findall(text: str) -> None:
    found = REF_ANSWER.findall(text)
    assert common.last_block(text, "<answer>", "</answer>") == (found[-1] if found else None)


TAG_PIECES = ["<think>", "</think>", "<answer>", "</answer>", "<glue>", "</glue>", " ", "\n", "x"]


@SMALL
@given(
    st.lists(st.sampled_from(TAG_PIECES), max_size=10).map("".join), st.booleans(), st.booleans()
)
def test_tag_structure_equals_reference_fullmatch(text: str, thinking: bool, glue: bool) -> None:
    pattern = (r"<think>.*?</think>\s*" if thinking else "") + r"<answer>.*?</answer>"
    pattern += r"\s*<glue>.*?</glue>" if glue else ""
    expected = re.fullmatch(pattern, text, re.DOTALL) is not None
    assert rewards._has_tag_structure(text, thinking=thinking, glue=glue) == expected


# ---------------------------------------------------------------------------------- fuzzing

NASTY_NUMBERS = [
    "1e308",
    "1e400",
    "-1e400",
    "9" * 5000,
    "-" + "9" * 400,
    "0." + "0" * 3000 + "1",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1_000",
    "0x10",
    "-0",
    "+1",
    ".5",
    "5.",
    "1e-400",
    "١٢",
]
NUMBER = st.one_of(
    st.sampled_from(NASTY_NUMBERS),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
)
PIECE = st.one_of(
    NUMBER,
    st.sampled_from(
        [
            *TAG_PIECES,
            " to ",
            " and ",
            "[",
            "]",
            "(",
            ")",
            ", ",
            "A",
            "(C)",
            "The answer is ",
            "<answer><answer>",
            "</answer></answer>",
        ]
    ),
    st.text(max_size=8),
)
ADVERSARIAL = st.lists(PIECE, max_size=40).map("".join)


PATHOLOGICAL_CHUNKS = [
    "<think></think><answer></answer><glue></glue>",
    "<think></think> <answer></answer> <glue>[(1, 2)]</glue>",
    "<answer>",
    "<think>",
    "</think> <answer>",
    "(1, 2), ",
    "[0, 0, 1, 1], ",
    "1",
    "1 ",
    "1.",
    "9 to ",
    "(",
    "The answer is ",
]
PATHOLOGICAL_ENDS = [
    "",
    "x",
    "</answer>",
    "</glue>",
    "]</answer>",
    "</answer><glue>[(1, 2)]</glue>",
]
PATHOLOGICAL = st.builds(
    lambda head, chunk, n, tail: head + chunk * n + tail,
    st.sampled_from(["", "<answer>", "<think></think><answer>", "<glue>[", "<answer>["]),
    st.sampled_from(PATHOLOGICAL_CHUNKS),
    st.integers(200, 5000),
    st.sampled_from(PATHOLOGICAL_ENDS),
)


COMPLETION = st.one_of(st.text(max_size=300), ADVERSARIAL, PATHOLOGICAL)

FLOAT = st.floats(allow_nan=True, allow_infinity=True)
SOLUTION = st.one_of(
    st.tuples(FLOAT, FLOAT).map(list),  # spans, degenerate and reversed included
    st.lists(st.tuples(FLOAT, FLOAT, FLOAT, FLOAT).map(list), min_size=7, max_size=9),
    st.lists(st.just([0.2, 0.2, 0.2, 0.6]), min_size=8, max_size=8),  # zero-area truth boxes
    st.fixed_dictionaries(
        {
            "answer": st.sampled_from(["A", "(C)", "h", "", "AB"]),
            "glue": st.lists(st.tuples(FLOAT, FLOAT).map(list), max_size=4),
        }
    ),
    st.none(),
    st.text(max_size=20),
    st.integers(),
)
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def check_in_unit_range(value: float) -> None:
    assert isinstance(value, float)
    assert math.isfinite(value) and 0.0 <= value <= 1.0


@FUZZ
@given(COMPLETION, SOLUTION, st.booleans())
def test_fuzz_every_reward_is_a_float_in_unit_range(
    completion: str, solution: Any, thinking: bool
) -> None:
    for func in (temporal_iou, tracking_iou, glue_iou, option_accuracy):
        check_in_unit_range(func(completion, solution))
        check_in_unit_range(func(completion, json.dumps(solution)))
    for task in TASKS:
        check_in_unit_range(format_reward(completion, task, thinking=thinking))
        for value in score(completion, task, solution, thinking=thinking).values():
            check_in_unit_range(value)


@FUZZ
@example("<answer>" + "1" * 2000 + "</answer>")  # the reference's timing regex: ~20 s
@example("<think></think><answer></answer><glue></glue>" * 400 + "x")  # lazy fullmatch: cubic
@example("<answer>" * 10000)  # lazy findall over unclosed tags: quadratic
@given(PATHOLOGICAL)
def test_pathological_inputs_stay_fast(completion: str) -> None:
    """Inputs on which the reference's regexes backtrack for seconds to hours (see deadline)."""
    for task in TASKS:
        for thinking in (False, True):
            for value in score(completion, task, GQA_SOL, thinking=thinking).values():
                check_in_unit_range(value)
        check_in_unit_range(tracking_iou(completion, TRUE_BOXES))
        check_in_unit_range(temporal_iou(completion, [1, 2]))


@FUZZ
@given(st.lists(st.tuples(NUMBER, NUMBER), min_size=1, max_size=10), SOLUTION)
def test_fuzz_structured_answers(pairs: list[tuple[str, str]], solution: Any) -> None:
    """Well-formed tags around hostile numbers: the parsers reach the arithmetic and survive."""
    spans = ", ".join(f"({a}, {b})" for a, b in pairs)
    boxes = "[" + ", ".join(f"[{a}, {b}, {b}, {a}]" for a, b in (pairs * 8)[:8]) + "]"
    for completion in (
        ans(f"{pairs[-1][0]} to {pairs[-1][1]}", "t"),
        ans(boxes, "t"),
        ans("C", "t") + f"<glue>[{spans}]</glue>",
    ):
        for task in TASKS:
            for value in score(completion, task, solution, thinking=True).values():
                check_in_unit_range(value)


CENTIS = st.integers(0, 10**6).map(lambda c: c / 100)  # times with two decimals, as prompted


@FUZZ
@given(st.tuples(CENTIS, CENTIS), st.tuples(CENTIS, CENTIS).map(sorted))
def test_fuzz_temporal_iou_is_the_spec_formula(
    pred: tuple[float, float], true: list[float]
) -> None:
    (s, e), (ts, te) = pred, true
    union = max(e, te) - min(s, ts)
    expected = max(0.0, min(e, te) - max(s, ts)) / union if s <= e and union > 0 else 0.0
    assert temporal_iou(ans(f"{s:.2f} to {e:.2f}"), true) == pytest.approx(expected)


@FUZZ
@given(st.lists(st.tuples(CENTIS, CENTIS).map(sorted), min_size=1, max_size=6))
def test_fuzz_glue_iou_of_itself_is_one(spans: list[list[float]]) -> None:
    completion = gqa("[" + ", ".join(f"({s:.2f}, {e:.2f})" for s, e in spans) + "]")
    covered = sum(e - s for s, e in common.merge_spans([(s, e) for s, e in spans]))
    assert format_reward(completion, "grounded_qa", thinking=True) == 1.0
    assert glue_iou(completion, {"answer": "C", "glue": spans}) == (1.0 if covered > 0 else 0.0)
