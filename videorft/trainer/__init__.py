"""GRPO trainers for video LLMs (see :mod:`videorft.trainer.video_grpo`)."""

from videorft.trainer.video_grpo import VIDEO_KEYS, VideoBatch, VideoGRPOTrainer, row_video

__all__ = ["VIDEO_KEYS", "VideoBatch", "VideoGRPOTrainer", "row_video"]
