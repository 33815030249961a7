"""Time a model's sampled decoding of long answers: is generation what makes tracking slow?

How to run (from a project's root, with the project's virtualenv active)::

    python docs/research/decode_time.py models/warm_start [--task tracking] [--source ""] \
        [--rows 2] [--generations 8] [--new-tokens 200]

Decodes ``--rows`` x ``--generations`` completions of exactly ``--new-tokens`` tokens
(``min_new_tokens``, so every run decodes as many steps) for the first train rows of
``--task`` from ``--source`` (split_rows.py's options; the default split is train),
once with a dynamic and once with a static KV cache, after one warm-up call each, and prints
the time per decoded token and the prefill time of the prompts (one forward). GRPO with
``num_iterations: N`` decodes one generation batch per N steps (r120-r126 in
rft-miniature.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rollouts import sampling_config
from split_rows import add_row_arguments, split_rows

from videorft.model.inputs import video_inputs
from videorft.model.loading import load_model_and_processor
from videorft.video.store import FrameStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model folder")
    add_row_arguments(parser, rows=2)
    parser.add_argument("--generations", type=int, default=8, help="completions per row")
    parser.add_argument("--new-tokens", type=int, default=200)
    args = parser.parse_args()

    rows = split_rows(args)
    model, processor = load_model_and_processor(args.model, dtype="float32")
    model.eval()
    batch = [row for row in rows for _ in range(args.generations)]
    inputs = video_inputs(processor, batch, FrameStore(args.project / "data/frames"))
    for cache in ("dynamic", "static"):
        config = sampling_config(model, processor.tokenizer, args.new_tokens, 1.0)
        config.min_new_tokens, config.cache_implementation = args.new_tokens, cache
        with torch.inference_mode():
            model.generate(**inputs, generation_config=config)
            start = time.perf_counter()
            model.generate(**inputs, generation_config=config)
            decode = time.perf_counter() - start
            start = time.perf_counter()
            model(**inputs)
            prefill = time.perf_counter() - start
        print(f"{cache}: {len(batch)} rows x {args.new_tokens} tokens in {decode:.2f} s "
              f"({1000 * decode / args.new_tokens:.2f} ms per token); prefill "
              f"{1000 * prefill:.1f} ms for prompts of {inputs['input_ids'].shape[1]} tokens")


if __name__ == "__main__":
    main()
