"""Score a model's greedy answers on some rows of a project's dataset split.

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/greedy_scores.py models/warm_start models/trained \
        [--split train] [--task tracking] [--source synthetic] [--rows 32] [--max-new-tokens 224]

For each model folder it answers the first ``--rows`` rows of ``data/dataset/<split>.jsonl``
(those of ``--task`` from ``--source``) greedily, as the evaluate stage does, and prints the
mean reward components. The evaluate stage only reads the test or val split; this tells whether
a model lost something on GRPO's own training videos too (r109 in rft-miniature.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videorft.model.generate import generate_answers
from videorft.model.loading import load_model_and_processor
from videorft.trainer.sft import score_answers
from videorft.video.store import FrameStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders")
    parser.add_argument("--split", default="train")
    parser.add_argument("--task", default="tracking")
    parser.add_argument("--source", default="synthetic")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=224)
    parser.add_argument("--project", type=Path, default=Path("."), help="project root")
    args = parser.parse_args()

    split_file = args.project / "data/dataset" / f"{args.split}.jsonl"
    if not split_file.is_file():
        raise SystemExit(f"{split_file}: no such split (run the pipeline through build_dataset)")
    rows = [json.loads(line) for line in split_file.read_text(encoding="utf-8").splitlines()]
    rows = [row for row in rows
            if row["task"] == args.task and row.get("source") == args.source][: args.rows]
    if not rows:
        raise SystemExit(f"{split_file}: no {args.task} row from source {args.source}")
    store = FrameStore(args.project / "data/frames")
    for folder in args.models:
        model, processor = load_model_and_processor(folder, dtype="float32")
        answers = generate_answers(model, processor, rows, store,
                                   max_new_tokens=args.max_new_tokens, batch_size=len(rows))
        summary = score_answers(rows, answers)["per_task"][args.task]
        print(folder, args.split, summary)


if __name__ == "__main__":
    main()
