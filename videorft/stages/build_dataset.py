"""Stage `build_dataset`: join records with the frame store, add prompts, split train/val.

Writes ``paths.dataset/{train,val[,test]}.jsonl`` (what the trainer and evaluator read) and
``paths.reports/dataset.json`` (counts per split and task, and every dropped record with its
reason; a DVC metric). Splits are made per video (or frame sequence), never per query, so the
many queries of one Charades video never straddle train and val.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from videorft.io import atomic_write_json, read_jsonl, write_jsonl
from videorft.params import Params
from videorft.prompts import build_prompt
from videorft.records import SPLITS, validate_record
from videorft.video.plan import FRAMES_REPORT, frame_key, recorded_sampling
from videorft.video.store import FrameStore


def video_group(record: dict[str, Any]) -> str:
    """What must not be split across train and val: the video file or the frame folder."""
    if record.get("video"):
        return record["video"]
    return str(PurePosixPath(record["frames"][0]).parent)


def assign_split(record: dict[str, Any], *, val_fraction: float, seed: int) -> str:
    """The source's own split if it has one, else a seeded hash of the video group."""
    if record.get("split"):
        return record["split"]
    digest = hashlib.sha256(f"{seed}:{video_group(record)}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def _cap(rows: list[dict[str, Any]], cap: int | None, seed: int) -> list[dict[str, Any]]:
    """Keep at most `cap` rows per task, chosen by a seeded hash (stable as data grows)."""
    if cap is None:
        return rows
    kept: list[dict[str, Any]] = []
    for task in sorted({r["task"] for r in rows}):
        of_task = [r for r in rows if r["task"] == task]
        of_task.sort(key=lambda r: hashlib.sha256(f"{seed}:{r['id']}".encode()).hexdigest())
        kept.extend(of_task[:cap])
    return sorted(kept, key=lambda r: r["id"])


def run(params: Params, root: Path) -> dict[str, Any]:
    cfg = params.build_dataset
    sampling = recorded_sampling(root / params.paths.reports / FRAMES_REPORT)
    records_path = root / params.paths.records
    store = FrameStore(root / params.paths.frames)
    out_dir = root / params.paths.dataset

    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    dropped: list[dict[str, str]] = []
    for record in read_jsonl(records_path):
        if record["task"] not in cfg.tasks:
            continue
        key = frame_key(record, sampling)
        if key not in store:
            dropped.append({"id": record["id"], "reason": "video quarantined or not extracted"})
            continue
        meta = store.meta(key)
        if record.get("duration") is None:
            # The annotation had no duration: check spans against the measured one.
            record = {**record, "duration": meta["duration"]}
            validate_record(
                record,
                file=str(records_path),
                duration_tolerance=params.download.duration_tolerance_s,
            )
        row = {
            **record,
            "split": assign_split(record, val_fraction=cfg.val_fraction, seed=cfg.seed),
            "frames_key": key,
            "frame_timestamps": meta["timestamps"],
            "sample_fps": meta["sample_fps"],
            "thinking": cfg.thinking,
            "prompt": build_prompt(record, thinking=cfg.thinking),
        }
        splits[row["split"]].append(row)

    counts: dict[str, dict[str, int]] = {}
    for split, rows in splits.items():
        rows = _cap(sorted(rows, key=lambda r: r["id"]), cfg.max_samples_per_task, cfg.seed)
        path = out_dir / f"{split}.jsonl"
        if rows or split in ("train", "val"):
            write_jsonl(path, rows)
            counts[split] = dict(sorted(Counter(r["task"] for r in rows).items()))
        else:
            path.unlink(missing_ok=True)
    stats = {"counts": counts, "dropped": len(dropped), "dropped_records": dropped}
    atomic_write_json(root / params.paths.reports / "dataset.json", stats)
    return {"counts": counts, "dropped": len(dropped)}
