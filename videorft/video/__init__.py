"""Video sampling (Qwen2.5-VL's rules), decoding, and the frame store.

- :mod:`videorft.video.sampling`: pure functions deciding which frames and what size.
- :mod:`videorft.video.decode`: PyAV (fast path), decord and image-sequence readers.
- :mod:`videorft.video.store`: :class:`FrameStore`, the frame store's read side.
- :mod:`videorft.video.extract`: the ``extract_frames`` stage, writing the store; beside it
  :mod:`~videorft.video.plan` (items and keys), :mod:`~videorft.video.worker` (one item,
  sampled and written), :mod:`~videorft.video.local_pool` and
  :mod:`~videorft.video.dask_cluster` (the executors), :mod:`~videorft.video.results`
  (outcomes and quarantine reasons).

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
