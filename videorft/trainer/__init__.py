"""GRPO trainers for video LLMs (see :mod:`videorft.trainer.video_grpo`)."""

from videorft.trainer.video_grpo import (
    GROUP_KEY,
    VIDEO_KEYS,
    VideoBatch,
    VideoGRPOTrainer,
    row_video,
    shuffle_by_group,
)

__all__ = [
    "GROUP_KEY", "VIDEO_KEYS", "VideoBatch", "VideoGRPOTrainer", "row_video", "shuffle_by_group",
]
