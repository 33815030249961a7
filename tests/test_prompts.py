"""Prompts carry the reference's wording in both modes."""

from __future__ import annotations

import pytest

from videorft.prompts import THINKING, build_messages, build_prompt
from videorft.records import make_record

TG = make_record(
    id="s/1",
    task="temporal_grounding",
    source="s",
    video="s/v.mp4",
    inputs={"query": "person opens a door"},
    solution=[1.0, 2.5],
)
TRACK = make_record(
    id="s/2",
    task="tracking",
    source="s",
    video="s/v.mp4",
    nframes=8,
    inputs={"object": "red car"},
    solution=[[0.1, 0.2, 0.3, 0.4]] + [[0.2, 0.2, 0.4, 0.4]] * 7,
)
GQA = make_record(
    id="s/3",
    task="grounded_qa",
    source="s",
    video="s/v.mp4",
    inputs={"question": "why did the boy run?", "options": ["rain", "dog"]},
    solution={"answer": "B", "glue": [[1.0, 2.0]]},
)
MCQ = make_record(
    id="s/4",
    task="mcq",
    source="s",
    video="s/v.mp4",
    inputs={"question": "what colour?", "options": ["red", "green", "blue"]},
    solution={"answer": "C"},
)


def test_temporal_grounding_wording() -> None:
    text = build_prompt(TG, thinking=True)
    assert text.startswith(
        'To accurately pinpoint the event "person opens a door" in the video, determine the '
        "precise time period of the event. " + THINKING + " Then, provide the start and end"
    )
    assert text.endswith('For example: "12.54 to 17.83".')


def test_no_think_drops_the_thinking_sentence() -> None:
    for record in (TG, TRACK, GQA, MCQ):
        text = build_prompt(record, thinking=False)
        assert "<think>" not in text and "Then, " not in text
        assert "<answer> </answer>" in text


def test_tracking_gives_object_and_first_box() -> None:
    text = build_prompt(TRACK)
    assert (
        'Track the "red car" in the video based on its initial coordinates '
        '"[0.10, 0.20, 0.30, 0.40]".' in text
    )
    assert "list of eight sublists" in text


@pytest.mark.parametrize(("record", "has_glue"), [(GQA, True), (MCQ, False)])
def test_multiple_choice_lists_lettered_options(record: dict, has_glue: bool) -> None:
    text = build_prompt(record)
    assert f'Answer the question: "{record["inputs"]["question"]}"' in text
    assert "(A) " + record["inputs"]["options"][0] in text
    assert "(B) " + record["inputs"]["options"][1] in text
    assert ("<glue> </glue>" in text) is has_glue


def test_messages_put_the_video_first() -> None:
    messages = build_messages(TG)
    assert messages[0]["content"][0] == {"type": "video"}
    assert messages[0]["content"][1]["text"] == build_prompt(TG)
