"""GRPO trainers for video LLMs (see :mod:`videorft.trainer.video_grpo`).

The GRPO names below load :mod:`~videorft.trainer.video_grpo`, and with it TRL, on first use:
the warm start and the evaluation import this package's other modules (data, SFT) and have no
use for TRL, whose import costs each of those stages about 1.5 s.
"""

from typing import TYPE_CHECKING, Any

__all__ = [
    "GROUP_KEY", "VIDEO_KEYS", "VideoBatch", "VideoGRPOTrainer", "row_video", "shuffle_by_group",
]

if TYPE_CHECKING:
    from videorft.trainer.video_grpo import (
        GROUP_KEY,
        VIDEO_KEYS,
        VideoBatch,
        VideoGRPOTrainer,
        row_video,
        shuffle_by_group,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from videorft.trainer import video_grpo

        return getattr(video_grpo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
