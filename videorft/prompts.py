"""Task prompts with VideoChat-R1's wording, in thinking and no-think modes.

The model answers in ``<think>...</think><answer>...</answer>`` (thinking) or
``<answer>...</answer>`` (no-think); grounded QA adds ``<glue>[(s, e), ...]</glue>``. The rule
rewards parse exactly these tags, so the wording here and the reward parsers evolve together.
"""

from __future__ import annotations

from typing import Any

from videorft.records import OPTION_LETTERS

THINKING = (
    "Output your thought process within the <think> </think> tags, including analysis with "
    "either specific timestamps (xx.xx) or time ranges (xx.xx to xx.xx) in <timestep> "
    "</timestep> tags."
)

_TG_QUESTION = (
    'To accurately pinpoint the event "{query}" in the video, determine the precise time '
    "period of the event."
)
_TG_ANSWER = (
    "Then, provide the start and end times (in seconds, precise to two decimal places) in the "
    'format "start time to end time" within the <answer> </answer> tags. For example: '
    '"12.54 to 17.83".'
)
_QA_QUESTION = (
    'Answer the question: "{question}" according to the content of the video. Select the '
    "answer from :{options}."
)
_GQA_ANSWER = (
    "Then, provide your answer within the <answer> </answer> tags, output the corresponding "
    "letter of the option. At the same time, in the <glue> </glue> tags, present the precise "
    "time period in seconds of the video clips on which you base your answer to this question "
    "in the format of [(s1, e1), (s2, e2), ...]. For example: "
    "<answer>A</answer><glue>[(5.2, 10.4)]</glue>."
)
_MCQ_ANSWER = (
    "Then, provide your answer within the <answer> </answer> tags, output the corresponding "
    "letter of the option."
)
_TRACK_QUESTION = (
    'Track the "{object}" in the video based on its initial coordinates "{start}". The output '
    "should be a list containing eight sublists. Each sublist includes four normalized "
    "coordinates [x0, y0, x1, y1] representing the bounding box of the object at specific time "
    "intervals."
)
_TRACK_ANSWER = (
    "Provide your answer within the <answer> </answer> tags as a list of eight sublists, where "
    "each sublist contains the normalized coordinates [x0, y0, x1, y1]. For example: "
    "<answer>[[0.1, 0.5, 0.3, 0.55], [0.72, 0.25, 0.84, 0.43], ...]</answer>."
)
# No-think mode starts the answer sentence without "Then, " (there is no thought before it).
_NO_THINK_PREFIX = ("Then, provide", "Provide")


def format_options(options: list[str]) -> str:
    """Lettered options, one per line: ``(A) text``."""
    return "\n".join(f"({OPTION_LETTERS[i]}) {text}" for i, text in enumerate(options))


def format_box(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:.2f}" for v in box) + "]"


def _join(question: str, answer: str, thinking: bool) -> str:
    if thinking:
        return f"{question} {THINKING} {answer}"
    if answer.startswith(_NO_THINK_PREFIX[0]):
        answer = _NO_THINK_PREFIX[1] + answer[len(_NO_THINK_PREFIX[0]) :]
    return f"{question} {answer}"


def build_prompt(record: dict[str, Any], *, thinking: bool = True) -> str:
    """The user-turn text for a canonical record (the video goes in as a separate part)."""
    task, inputs = record["task"], record["inputs"]
    if task == "temporal_grounding":
        return _join(_TG_QUESTION.format(query=inputs["query"]), _TG_ANSWER, thinking)
    if task == "tracking":
        question = _TRACK_QUESTION.format(
            object=inputs["object"], start=format_box(record["solution"][0])
        )
        return _join(question, _TRACK_ANSWER, thinking)
    if task in ("grounded_qa", "mcq"):
        question = _QA_QUESTION.format(
            question=inputs["question"], options=format_options(inputs["options"])
        )
        return _join(question, _GQA_ANSWER if task == "grounded_qa" else _MCQ_ANSWER, thinking)
    raise ValueError(f"no prompt for task {task!r}")


def build_messages(record: dict[str, Any], *, thinking: bool = True) -> list[dict[str, Any]]:
    """Chat messages in the Qwen2.5-VL processor's format: a video part, then the prompt."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "video"},
                {"type": "text", "text": build_prompt(record, thinking=thinking)},
            ],
        }
    ]
