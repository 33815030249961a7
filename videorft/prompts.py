"""Task prompts with VideoChat-R1's wording, in thinking and no-think modes.

The model answers in ``<think>...</think><answer>...</answer>`` (thinking) or
``<answer>...</answer>`` (no-think); grounded QA adds ``<glue>[(s, e), ...]</glue>``. The rule
rewards parse exactly these tags, so the wording and the reward parsers evolve together: each
task's question and answer sentences live in its module under :mod:`videorft.video_tasks`, next
to its reward rules, and :meth:`~videorft.video_tasks.base.VideoTask.prompt` joins them. This
module builds the user turn for a record and the chat messages around it.
"""

from __future__ import annotations

from typing import Any

import videorft.video_tasks as video_tasks
from videorft.video_tasks.base import THINKING
from videorft.video_tasks.common import format_box, format_options

__all__ = ["THINKING", "build_messages", "build_prompt", "format_box", "format_options"]


def build_prompt(record: dict[str, Any], *, thinking: bool = True) -> str:
    """The user-turn text for a canonical record (the video goes in as a separate part)."""
    try:
        task = video_tasks.get(record["task"])
    except video_tasks.UnknownTaskError:
        raise ValueError(f"no prompt for task {record['task']!r}") from None
    return task.prompt(record, thinking=thinking)


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
