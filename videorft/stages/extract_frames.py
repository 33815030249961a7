"""Stage `extract_frames`: sample every video once, by Qwen2.5-VL's rules, into the frame store.

Training reads the store and never decodes a video again. Bad videos go to the quarantine
report; the stage fails only when their share passes ``max_quarantine_fraction``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videorft.io import atomic_write_json, read_jsonl
from videorft.params import Params
from videorft.video.extract import extract_frames, items_from_records
from videorft.video.plan import FRAMES_REPORT
from videorft.video.sampling import SamplingConfig


def run(params: Params, root: Path) -> dict[str, Any]:
    cfg = SamplingConfig.from_params(params.extract_frames)
    records = list(read_jsonl(root / params.paths.records))
    items = items_from_records(records, cfg)
    report = extract_frames(
        items, root / params.paths.raw, root / params.paths.frames, params.extract_frames
    )
    summary = {
        "items": report.total,
        "extracted": report.extracted,
        "reused": report.reused,
        "quarantined": report.quarantined,
        "quarantine": [{"video": e.get("video") or str(e.get("frames")), "reason": e["reason"]}
                       for e in report.quarantine],  # the orchestrator's artifact
        "executor": params.extract_frames.executor,
    }
    # A DVC metric: the counts (not `extracted`/`reused`, which depend on history), and the
    # sampling the frames were taken with, which build_dataset reads to find them: the store
    # keeps every sampling ever run, so only this file changes when the sampling goes back.
    atomic_write_json(
        root / params.paths.reports / FRAMES_REPORT,
        {"items": report.total, "quarantined": report.quarantined, "sampling": cfg.as_dict()},
    )
    return summary
