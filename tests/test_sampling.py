"""Our sampling rules against qwen_vl_utils (the reference Qwen2.5-VL loader), number for number.

The oracle is qwen_vl_utils.fetch_video itself: its video reader is replaced by one that
reports a video's frame count, rate and size without pixels, and the final torchvision resize
by one that records the size it is asked for. Everything between (smart_nframes, the
torch.linspace indices, the per-frame budget, smart_resize) is the reference's own code.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from qwen_vl_utils import vision_process as vp

from videorft.video.sampling import (
    SamplingConfig,
    SamplingError,
    frame_pixel_budget,
    plan_sampling,
    plan_sequence,
    sample_indices,
    smart_nframes,
    smart_resize,
)

PAPER = SamplingConfig(fps=2.0, min_frames=4, max_frames=768, min_pixels=16 * 28 * 28,
                       max_pixels=768 * 28 * 28, total_pixels=3584 * 28 * 28)
TINY = SamplingConfig(fps=1.0, min_frames=2, max_frames=16, min_pixels=4 * 28 * 28,
                      max_pixels=64 * 28 * 28, total_pixels=256 * 28 * 28)
QWEN_DEFAULT = SamplingConfig(total_pixels=int(128000 * 28 * 28 * 0.9), min_pixels=128 * 28 * 28)


def _ele(cfg: SamplingConfig, nframes: int | None) -> dict:
    """The fetch_video element a caller would pass for this config."""
    ele = {"min_pixels": cfg.min_pixels, "total_pixels": cfg.total_pixels}
    if cfg.max_pixels != vp.VIDEO_MAX_TOKEN_NUM * cfg.factor**2:
        ele["max_pixels"] = cfg.max_pixels
    if nframes is not None:
        ele["nframes"] = nframes
    else:
        ele.update(fps=cfg.fps, min_frames=cfg.min_frames, max_frames=cfg.max_frames)
    return ele


def reference(monkeypatch: pytest.MonkeyPatch, total: int, fps: float, height: int, width: int,
              cfg: SamplingConfig, nframes: int | None) -> dict:
    """Run qwen_vl_utils.fetch_video on a pixel-free stand-in video; return what it decided."""
    seen: dict = {}

    def fake_reader(ele: dict):
        # What every qwen_vl_utils reader does, minus the decoding.
        n = vp.smart_nframes(ele, total_frames=total, video_fps=fps)
        idx = torch.linspace(0, total - 1, n).round().long()
        video = torch.zeros(1, 1, 1, 1, dtype=torch.uint8).expand(n, 3, height, width)
        seen["indices"] = idx.tolist()
        return video, {"frames_indices": idx}, n / max(total, 1e-6) * fps

    def fake_resize(video, size, **kwargs):
        seen["size"] = tuple(size)
        return torch.zeros(1, 1, 1, 1).expand(video.shape[0], 3, *size)

    monkeypatch.setitem(vp.VIDEO_READER_BACKENDS, "fake", fake_reader)
    # fetch_video retries a failing reader with torchvision: make that the stand-in too.
    monkeypatch.setitem(vp.VIDEO_READER_BACKENDS, "torchvision", fake_reader)
    monkeypatch.setattr(vp, "get_video_reader_backend", lambda: "fake")
    monkeypatch.setattr(vp.transforms.functional, "resize", fake_resize)
    video, sample_fps = vp.fetch_video({"video": "unused.mp4", **_ele(cfg, nframes)},
                                       return_video_sample_fps=True)
    seen["sample_fps"] = sample_fps
    seen["nframes"] = video.shape[0]
    return seen


CASES = [
    # (seconds, fps, height, width, cfg, nframes)
    pytest.param(1.5, 30.0, 480, 640, PAPER, None, id="short-1.5s"),
    pytest.param(0.3, 30.0, 360, 640, PAPER, None, id="very-short-9-frames"),
    pytest.param(3600, 30.0, 720, 1280, PAPER, None, id="1h-30fps-max-frames"),
    pytest.param(600, 30000 / 1001, 1080, 1920, PAPER, None, id="29.97fps-10min"),
    pytest.param(125, 24000 / 1001, 1080, 1920, PAPER, None, id="23.976fps"),
    pytest.param(31.4, 25.0, 1920, 1080, PAPER, None, id="portrait"),
    pytest.param(12, 30.0, 20, 30, PAPER, None, id="tiny-30x20"),
    pytest.param(47, 60.0, 2160, 3840, PAPER, None, id="4k-60fps"),
    pytest.param(10, 30.0, 240, 320, PAPER, 8, id="nframes-8"),
    pytest.param(10, 30.0, 240, 320, PAPER, 7, id="nframes-7-rounds-to-8"),
    pytest.param(10, 30.0, 240, 320, PAPER, 5, id="nframes-5-rounds-to-4"),
    pytest.param(200, 15.0, 480, 854, TINY, None, id="tiny-config-max"),
    pytest.param(2.9, 30.0, 480, 854, TINY, None, id="tiny-config-min"),
    pytest.param(95, 29.97, 576, 720, QWEN_DEFAULT, None, id="qwen-defaults"),
    pytest.param(7200, 30.0, 360, 640, PAPER, None, id="2h"),
    pytest.param(3, 8.0, 100, 19000, PAPER, None, id="ratio-190"),
]


@pytest.mark.parametrize(("seconds", "fps", "height", "width", "cfg", "nframes"), CASES)
def test_plan_matches_qwen_vl_utils(monkeypatch, seconds, fps, height, width, cfg, nframes):
    total = int(seconds * fps)
    ref = reference(monkeypatch, total, fps, height, width, cfg, nframes)
    plan = plan_sampling(total, fps, height, width, cfg, nframes)

    assert smart_nframes(total, fps, cfg, nframes) == ref["nframes"] == plan.nframes
    assert plan.indices == ref["indices"]
    assert (plan.height, plan.width) == ref["size"]
    assert plan.sample_fps == ref["sample_fps"]
    assert plan.timestamps == [i / fps for i in plan.indices]
    # Invariants, whatever the reference says.
    assert plan.height % cfg.factor == 0 and plan.width % cfg.factor == 0
    assert plan.nframes % 2 == 0 and 2 <= plan.nframes <= total
    if nframes is None:
        lo = min(math.ceil(cfg.min_frames / 2) * 2, total)
        assert lo - 1 <= plan.nframes <= cfg.max_frames
    assert plan.indices == sorted(plan.indices) and plan.indices[0] == 0
    assert plan.indices[-1] == total - 1
    assert plan.height * plan.width <= max(frame_pixel_budget(plan.nframes, cfg),
                                           cfg.min_pixels * 1.05 + 2 * cfg.factor**2) * 1.0001


def test_budget_is_fetch_video_formula():
    # fetch_video: max(min(VIDEO_FRAME_MAX_PIXELS, total / n * 2), int(min_pixels * 1.05))
    for n in (2, 4, 8, 16, 120, 768):
        for cfg in (PAPER, TINY, QWEN_DEFAULT):
            expected = max(min(cfg.max_pixels, cfg.total_pixels / n * 2),
                           int(cfg.min_pixels * 1.05))
            assert frame_pixel_budget(n, cfg) == expected
    # The long-video floor: 768 frames share 3584*784*2 pixels, below min_pixels * 1.05.
    assert frame_pixel_budget(768, PAPER) == int(16 * 28 * 28 * 1.05)
    # The short-video cap.
    assert frame_pixel_budget(4, PAPER) == 768 * 28 * 28


@pytest.mark.parametrize(
    ("height", "width", "min_pixels", "max_pixels"),
    [(1080, 1920, 12544, 46829.3), (20, 30, 12544, 602112), (2160, 3840, 3136, 602112.0),
     (1920, 1080, 12544, 13171), (719, 1281, 100, 10**7), (28, 28, 784, 784),
     (3, 500, 12544, 602112)],
)
def test_smart_resize_matches(height, width, min_pixels, max_pixels):
    assert smart_resize(height, width, 28, min_pixels, max_pixels) == vp.smart_resize(
        height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels
    )


@settings(max_examples=300, deadline=None)
@given(total=st.integers(1, 250_000), n=st.integers(1, 800))
def test_sample_indices_is_torch_linspace(total, n):
    expected = torch.linspace(0, total - 1, n).round().long().tolist()
    assert sample_indices(total, n) == expected


def test_sample_indices_float32_cases_that_float64_gets_wrong():
    # Hour-long videos: float64 linspace rounds some of these differently from torch.
    for total, n in [(108000, 768), (107892, 768), (215784, 768), (54000, 766)]:
        assert sample_indices(total, n) == torch.linspace(0, total - 1, n).round().long().tolist()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    total=st.integers(2, 200_000),
    fps=st.sampled_from([1.0, 5.0, 10.0, 23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0]),
    height=st.integers(8, 4320),
    aspect=st.floats(0.2, 5.0),
    cfg=st.sampled_from([PAPER, TINY, QWEN_DEFAULT]),
    nframes=st.one_of(st.none(), st.integers(2, 64)),
)
def test_property_plan_matches_qwen(monkeypatch, total, fps, height, aspect, cfg, nframes):
    width = max(8, int(height * aspect))
    if nframes is not None and nframes > total:
        nframes = None
    try:
        ref = reference(monkeypatch, total, fps, height, width, cfg, nframes)
    except ValueError:
        with pytest.raises(SamplingError):
            plan_sampling(total, fps, height, width, cfg, nframes)
        return
    plan = plan_sampling(total, fps, height, width, cfg, nframes)
    assert (plan.nframes, plan.indices, (plan.height, plan.width), plan.sample_fps) == (
        ref["nframes"], ref["indices"], ref["size"], ref["sample_fps"])


@pytest.mark.parametrize(
    ("height", "width", "count"),
    [(1080, 1920, 8), (720, 1280, 7), (100, 300, 9), (37, 53, 4), (480, 640, 30)],
)
def test_sequence_plan_matches_fetch_video_on_images(monkeypatch, height, width, count):
    monkeypatch.setattr(vp.transforms.functional, "resize",
                        lambda video, size, **kw: torch.zeros(1).expand(len(video), 3, *size))
    images = [Image.new("RGB", (width, height), (i, 0, 0)) for i in range(count)]
    video = vp.fetch_video({"video": images, "min_pixels": PAPER.min_pixels,
                            "total_pixels": PAPER.total_pixels})
    times = [0.1 * i for i in range(count)]
    plan = plan_sequence(times, height, width, PAPER)
    assert (plan.nframes, plan.height, plan.width) == (video.shape[0], video.shape[2],
                                                         video.shape[3])
    # Padding repeats the last frame (and its time) up to an even count.
    even = count + count % 2
    assert plan.indices == list(range(count)) + [count - 1] * (even - count)
    assert plan.timestamps == times + [times[-1]] * (even - count)
    assert plan.sample_fps == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: plan_sampling(0, 30.0, 240, 320, PAPER), "0 frames"),
        (lambda: plan_sampling(1, 30.0, 240, 320, PAPER), "1 frames"),
        (lambda: plan_sampling(5, 30.0, 240, 320, PAPER, nframes=8), "8 frames"),
        (lambda: plan_sampling(100, 30.0, 10, 2500, PAPER), "aspect ratio 250"),
        (lambda: plan_sampling(100, 0.0, 240, 320, PAPER), "frame rate"),
        (lambda: smart_resize(0, 10, 28, 1, 10), "0x10"),
        (lambda: plan_sequence([], 10, 10, PAPER), "empty"),
        (lambda: plan_sequence([0.0, 0.0], 10, 10, PAPER), "increase"),
        (lambda: SamplingConfig(fps=0), "fps must be > 0"),
    ],
)
def test_impossible_inputs_raise_clear_errors(call, message):
    with pytest.raises(SamplingError, match=message):
        call()
    assert issubclass(SamplingError, ValueError)


def test_reference_refuses_what_we_refuse(monkeypatch):
    # nframes beyond the video and absurd aspect ratios are errors in the reference too.
    with pytest.raises(ValueError):
        reference(monkeypatch, 5, 30.0, 240, 320, PAPER, 8)
    with pytest.raises(ValueError):
        reference(monkeypatch, 100, 30.0, 10, 2500, PAPER, None)


def test_config_from_params_and_stable_types():
    from videorft.params import ExtractFramesParams

    params = ExtractFramesParams(fps=1, min_frames=6, max_frames=100, patch_factor=28)
    cfg = SamplingConfig.from_params(params)
    assert cfg == SamplingConfig(fps=1.0, min_frames=6, max_frames=100)
    assert isinstance(cfg.fps, float)
    # An int fps and a float fps must be the same config (they key the frame store).
    assert SamplingConfig(fps=2).as_dict() == SamplingConfig(fps=2.0).as_dict()
    assert repr(SamplingConfig(fps=2).as_dict()["fps"]) == "2.0"
