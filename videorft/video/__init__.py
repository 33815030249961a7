"""Video sampling (Qwen2.5-VL's rules), decoding, and the frame store.

- :mod:`videorft.video.sampling`: pure functions deciding which frames and what size.
- :mod:`videorft.video.decode`: PyAV (fast path), decord and image-sequence readers.
- :mod:`videorft.video.extract`: the ``extract_frames`` stage and :class:`FrameStore`.

Only the sampling names are re-exported here, so importing them does not load FFmpeg.
"""

from videorft.video.sampling import (
    SamplingConfig,
    SamplingError,
    SamplingPlan,
    frame_pixel_budget,
    plan_sampling,
    plan_sequence,
    sample_indices,
    smart_nframes,
    smart_resize,
)

__all__ = [
    "SamplingConfig",
    "SamplingError",
    "SamplingPlan",
    "frame_pixel_budget",
    "plan_sampling",
    "plan_sequence",
    "sample_indices",
    "smart_nframes",
    "smart_resize",
]
