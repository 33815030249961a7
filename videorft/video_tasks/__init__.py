"""The video tasks and their registry: one module per task, one table naming them all.

Every module that treats tasks differently (record validation, prompts, rewards, scoring, the
warm start's reference answers, the synthetic source's task list) looks the task up here
instead of branching on its name, so a task is added by writing its module (a
:class:`~videorft.video_tasks.base.VideoTask`) and one line in :data:`REGISTRY`, or, for a
test or an experiment, by :func:`register` at run time.

:data:`REGISTRY` holds the built-in tasks in the canonical (paper) order: temporal grounding,
tracking, grounded QA, multiple choice. Reports, metrics files and per-task listings follow it;
a registered task comes after them.

Named ``video_tasks`` to keep it apart from the top-level ``tasks/`` folder, which holds the
Prefect tasks of the pipeline stages.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from videorft.video_tasks import grounded_qa, mcq, temporal_grounding, tracking
from videorft.video_tasks.base import COMPONENTS, VideoTask

__all__ = [
    "CANONICAL",
    "REGISTRY",
    "UnknownTaskError",
    "VideoTask",
    "get",
    "names",
    "register",
    "table",
    "unregister",
]

#: name -> task, in the canonical order. Change it only through register / unregister.
REGISTRY: dict[str, VideoTask] = {
    task.name: task
    for task in (temporal_grounding.TASK, tracking.TASK, grounded_qa.TASK, mcq.TASK)
}

#: The built-in tasks' names in the canonical order (params.yaml's task lists use these).
CANONICAL: tuple[str, ...] = tuple(REGISTRY)


class UnknownTaskError(ValueError):
    """A task name the registry does not hold (a ValueError, as callers have always caught)."""


def names() -> tuple[str, ...]:
    """The registered tasks' names: the canonical order, then tasks registered at run time."""
    return tuple(REGISTRY)


def get(name: Any) -> VideoTask:
    """The task called ``name``; UnknownTaskError listing the known ones for any other value."""
    task = REGISTRY.get(name) if isinstance(name, str) else None
    if task is None:
        raise UnknownTaskError(f"unknown task {name!r} (expected one of {', '.join(REGISTRY)})")
    return task


def _check(task: VideoTask) -> None:
    """Refuse a task the rest of the pipeline could not handle, naming what is wrong."""
    if not isinstance(task, VideoTask):
        raise TypeError(f"a video task must be a VideoTask, got {type(task).__name__}")
    name = getattr(task, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a video task needs a non-empty name, got {name!r}")
    rewards = getattr(task, "rewards", ())
    if not rewards or rewards[0] != "format" or len(set(rewards)) != len(rewards):
        raise ValueError(f"task {name!r}: rewards must start with 'format', got {rewards!r}")
    unknown = [c for c in rewards if c not in COMPONENTS]
    if unknown:
        raise ValueError(f"task {name!r}: unknown reward component(s) {', '.join(unknown)} "
                         f"(known: {', '.join(COMPONENTS)})")
    content = dict(getattr(task, "content_rewards", {}))
    if set(content) != set(rewards[1:]):
        raise ValueError(f"task {name!r}: content_rewards must give a function for each of "
                         f"{', '.join(rewards[1:]) or 'no component'}, got {', '.join(content)}")
    if not getattr(task, "metrics", ()):
        raise ValueError(f"task {name!r}: no metrics")


def register(task: VideoTask) -> VideoTask:
    """Add a task after the registered ones; refuses a name already taken or a task whose
    reward components the rewards module does not know."""
    _check(task)
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} is already registered")
    REGISTRY[task.name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task registered at run time (the built-in tasks stay)."""
    if name in CANONICAL:
        raise ValueError(f"task {name!r} is built in and cannot be unregistered")
    get(name)
    del REGISTRY[name]


class _Column(Mapping[str, Any]):
    """A live read-only ``{name: task.<attribute>}`` over the registry (see :func:`table`)."""

    def __init__(self, attribute: str):
        self._attribute = attribute

    def __getitem__(self, name: str) -> Any:
        return getattr(REGISTRY[name], self._attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)

    def __repr__(self) -> str:
        return repr(dict(self))


def table(attribute: str) -> Mapping[str, Any]:
    """``{task name: task.<attribute>}`` for every registered task, in registry order, live.

    Backs the per-task tables other modules have always exported
    (``videorft.rewards.TASK_REWARDS``, ``videorft.evaluation.scoring.METRICS``): they read
    like the dicts they were and follow the registry, a task registered later included.
    """
    return _Column(attribute)
