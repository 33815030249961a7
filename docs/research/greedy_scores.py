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
from pathlib import Path

from split_rows import add_row_arguments, split_rows

from videorft.model.generate import generate_answers
from videorft.model.loading import load_model_and_processor
from videorft.trainer.sft import score_answers
from videorft.video.store import FrameStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders")
    add_row_arguments(parser, rows=32)
    parser.add_argument("--max-new-tokens", type=int, default=224)
    args = parser.parse_args()

    rows = split_rows(args)
    store = FrameStore(args.project / "data/frames")
    for folder in args.models:
        model, processor = load_model_and_processor(folder, dtype="float32")
        answers = generate_answers(model, processor, rows, store,
                                   max_new_tokens=args.max_new_tokens, batch_size=len(rows))
        summary = score_answers(rows, answers)["per_task"][args.task]
        print(folder, args.split, summary)


if __name__ == "__main__":
    main()
