"""Rows of a project's dataset split for the research scripts beside this file.

They run as ``python docs/research/<script>.py`` from a project's root, so this module is
importable as ``split_rows`` (the script's folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from videorft import video_tasks


def add_row_arguments(parser: argparse.ArgumentParser, *, rows: int) -> None:
    """``--split``, ``--task``, ``--source``, ``--rows`` and ``--project``, as every script names
    them (``--source`` empty: rows of any source)."""
    parser.add_argument("--split", default="train")
    parser.add_argument("--task", default="tracking")
    parser.add_argument("--source", default="synthetic")
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--project", type=Path, default=Path("."), help="project root")


def split_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Up to ``args.rows`` rows of ``args.task`` (from ``args.source``) in the split, in file
    order; a one-line exit naming the problem when the task is unknown or the split or such
    rows are missing."""
    if args.task not in video_tasks.names():
        raise SystemExit(f"--task {args.task}: unknown (expected one of "
                         f"{', '.join(video_tasks.names())})")
    split_file = args.project / "data/dataset" / f"{args.split}.jsonl"
    if not split_file.is_file():
        raise SystemExit(f"{split_file}: no such split (run the pipeline through build_dataset)")
    rows = [json.loads(line) for line in split_file.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows if row["task"] == args.task
            and (not args.source or row.get("source") == args.source)][: args.rows]
    if not rows:
        source = f" from source {args.source}" if args.source else ""
        raise SystemExit(f"{split_file}: no {args.task} row{source}")
    return rows
