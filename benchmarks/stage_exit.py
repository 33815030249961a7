"""Benchmark: how long a stage's process takes to end once its work is done, with the
interpreter's normal teardown vs ``videorft stage``'s exit that skips it.

Each run is a child process that does what a model stage does before it ends: imports torch
and transformers, builds the tiny Qwen2.5-VL, loads it and answers one batch, then prints a
line and exits, either normally (``normal``: Python frees every module and object) or through
``videorft.cli._exit_skipping_teardown`` (``skipped``: exit handlers and streams, then
``os._exit``). The time from that line to the process's end is what DVC waits for after every
stage. The two ways alternate (``--repeats`` pairs, each way first in every other pair).

Run: .venv/bin/python benchmarks/stage_exit.py [--repeats 5]
Ends with one line: teardown_skip_speedup (median over pairs of normal / skipped exit time).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from warm_start_split import (  # this folder is on sys.path when run as a script
    add_repeats,
    alternating,
    checked,
)

ROOT = Path(__file__).resolve().parents[1]
DONE = "work done"

CHILD = """
import sys
from pathlib import Path

import torch

from videorft.model.loading import load_model_and_processor
from videorft.model.tiny import build_tiny_model

folder = build_tiny_model(Path(sys.argv[1]) / "tiny")
model, processor = load_model_and_processor(folder, dtype="float32")
with torch.inference_mode():
    model(input_ids=torch.ones(4, 64, dtype=torch.long))
print(sys.argv[3], flush=True)
if sys.argv[2] == "skipped":
    from videorft.cli import _exit_skipping_teardown

    _exit_skipping_teardown()
"""


def exit_seconds(way: str, scratch: Path) -> float:
    """Seconds from the child's DONE line to its exit."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(scratch), way, DONE], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == DONE:
            done = time.perf_counter()
            break
    else:
        raise SystemExit(f"{way}: the child ended without its {DONE!r} line")
    code = child.wait()
    ended = time.perf_counter()
    if code != 0:
        raise SystemExit(f"{way}: the child exited with {code}")
    return ended - done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_repeats(parser)
    parser.set_defaults(repeats=5)
    args = checked(parser)
    times: dict[str, list[float]] = {"normal": [], "skipped": []}
    with tempfile.TemporaryDirectory() as scratch:
        for way in alternating(args.repeats, "normal", "skipped"):
            times[way].append(exit_seconds(way, Path(scratch)))
    ratios = []
    for normal, skipped in zip(times["normal"], times["skipped"], strict=True):
        ratios.append(normal / skipped)
        print(f"normal exit {normal:.3f} s; skipped teardown {skipped:.3f} s; "
              f"ratio {ratios[-1]:.1f}")
    print(f"teardown_skip_speedup {statistics.median(ratios):.1f} "
          f"(median normal exit {statistics.median(times['normal']):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
