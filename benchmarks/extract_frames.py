"""Benchmark: Qwen-style frame sampling with our PyAV reader vs. the naive loader vs. decord.

Generates (once, cached in benchmarks/.cache/) H.264 clips with libx264's default settings
(GOP 250, B-frames), 30 fps, with moving content, then times on each clip, with the paper's
sampling config (fps 2, total_pixels 3584*28*28, min_pixels 16*28*28):

  ours    probe + plan + read_frames_pyav(plan)      (what extract_frames runs per video)
  naive   decode_all_then_sample: PyAV with default settings decodes every frame, converts
          every frame to RGB, keeps the planned ones, resizes them (PIL bicubic)
  decord  decord VideoReader.get_batch(plan.indices) + the same resize

and prints sampled frames delivered per second of wall time, plus the CPU-time ratio. The
machine may be shared: each (clip, method) is timed several times, interleaved, and the best
time is kept. Our reader uses every CPU for one video (parallel chunks or frame threading);
the naive loader uses PyAV's defaults, which decode one-slice H.264 on one thread.

Run: .venv/bin/python benchmarks/extract_frames.py [--repeats N] [--quick]
Ends with two lines: speedup_vs_decode_all (median over the 60 s clips of ours/naive) and
speedup_vs_decord (same, ours/decord).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
from PIL import Image

from videorft.video.decode import (
    decode_all_then_sample,
    probe,
    read_frames_decord,
    read_frames_pyav,
)
from videorft.video.sampling import SamplingConfig, plan_sampling

CACHE = Path(__file__).resolve().parent / ".cache"
GENERATOR_VERSION = 4  # bump when the content changes, to regenerate the cache
FPS = 30
RESOLUTIONS = [(320, 240), (640, 360), (1280, 720)]
DURATIONS = [10, 60]
PAPER = SamplingConfig(fps=2.0, min_pixels=16 * 28 * 28, total_pixels=3584 * 28 * 28)


def _texture(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random landscape with some fine detail, larger than the frame (to pan over)."""
    rng = np.random.default_rng(seed)
    big_w, big_h = width + 8 * FPS, height + 2 * FPS
    coarse = rng.integers(0, 256, (big_h // 16 + 2, big_w // 16 + 2, 3), dtype=np.uint8)
    smooth = Image.fromarray(coarse).resize((big_w, big_h), Image.Resampling.BICUBIC)
    detail = rng.normal(0, 12, (big_h, big_w, 1))
    return np.clip(np.asarray(smooth, dtype=np.float32) + detail, 0, 255).astype(np.uint8)


def _frames(width: int, height: int, count: int, seed: int):
    """Camera panning to and fro over a texture, two moving objects, a scene cut every 20 s.

    Motion is continuous (no wrap-around jumps), so x264 places keyframes by its own rules
    (every 250 frames, plus the scene cuts) as it would in real footage.
    """
    textures = [_texture(width, height, seed + k) for k in range(2)]
    for i in range(count):
        tex = textures[(i // (20 * FPS)) % 2]
        span_x, span_y = tex.shape[1] - width - 1, tex.shape[0] - height - 1
        x = abs((4 * i) % (2 * span_x) - span_x)
        y = abs((i // 3) % (2 * span_y) - span_y)
        image = tex[y:y + height, x:x + width].copy()
        size = max(8, height // 6)
        bx = int((width - size) * (0.5 + 0.45 * np.sin(i / 23)))
        by = int((height - size) * (0.5 + 0.45 * np.cos(i / 31)))
        image[by:by + size, bx:bx + size] = (230, 40, 40)
        cx = (7 * i) % max(1, width - size)
        image[height - size - 4:height - 4, cx:cx + size] = (40, 40, 230)
        yield image


def make_clip(width: int, height: int, seconds: int) -> Path:
    path = CACHE / f"clip_v{GENERATOR_VERSION}_{width}x{height}_{seconds}s.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)  # x264 defaults: GOP 250, B-frames
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # As `ffmpeg -c:v libx264` does: frame-threaded x264, one slice per frame. (PyAV's
        # default, slice threading, makes x264 cut every frame into slices, which real
        # videos rarely have and which lets the naive loader decode in parallel.)
        stream.thread_type = "AUTO"
        for image in _frames(width, height, seconds * FPS, seed=width + seconds):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def _time(fn: Callable[[], np.ndarray]) -> tuple[float, float, np.ndarray]:
    """(wall seconds, CPU seconds, result) of one call."""
    cpu, start = _cpu(), time.perf_counter()
    out = fn()
    return time.perf_counter() - start, _cpu() - cpu, out


def bench_clip(path: Path, repeats: int, have_decord: bool) -> dict:
    info = probe(path)
    plan = plan_sampling(info.total_frames, info.fps, info.height, info.width, PAPER)
    size = (plan.height, plan.width)
    stats: dict[str, int] = {}

    def ours() -> np.ndarray:
        # The whole per-video work of extract_frames except writing: probe, plan, read.
        meta = probe(path)
        p = plan_sampling(meta.total_frames, meta.fps, meta.height, meta.width, PAPER)
        return read_frames_pyav(path, p.indices, (p.height, p.width), stats=stats)

    methods: dict[str, Callable[[], np.ndarray]] = {
        "ours": ours,
        "naive": lambda: decode_all_then_sample(path, plan.indices, size),
    }
    if have_decord:
        methods["decord"] = lambda: read_frames_decord(path, plan.indices, size)
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    shapes = set()
    names = list(methods)
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]  # rotate: fair to noise
        for name in order:
            seconds, cpu, out = _time(methods[name])
            shapes.add(out.shape)
            best[name] = min(best.get(name, float("inf")), seconds)
            best_cpu[name] = min(best_cpu.get(name, float("inf")), cpu)
    assert len(shapes) == 1, f"methods disagree on the output shape: {shapes}"
    return {
        "clip": path.name,
        "res": f"{info.width}x{info.height}",
        "seconds": round(info.duration),
        "total": info.total_frames,
        "n": plan.nframes,
        "size": f"{plan.width}x{plan.height}",
        "best": best,
        "cpu": best_cpu,
        "fps": {k: plan.nframes / v for k, v in best.items()},
        "decoded": stats.get("decoded", 0),
        "seeks": stats.get("seeks", 0),
        "chunks": stats.get("chunks", 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="timings per clip and method")
    parser.add_argument("--quick", action="store_true", help="10 s clips only (no summary)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        import decord  # noqa: F401

        have_decord = True
    except ImportError:
        have_decord = False
        print("decord is not installed: its column is skipped")

    durations = [10] if args.quick else DURATIONS
    gen_start = time.perf_counter()
    clips = [make_clip(w, h, s) for s in durations for (w, h) in RESOLUTIONS]
    print(f"clips ready in {time.perf_counter() - gen_start:.1f} s (cache: {CACHE})")
    print(f"cpus: {os.cpu_count()}, load average at start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; best of {args.repeats} runs")
    print()
    header = (f"{'clip':<10} {'frames':>6} {'n':>4} {'out':>8} {'ours fps':>9} {'naive fps':>9} "
              f"{'decord fps':>10} {'x naive':>8} {'x decord':>8} {'cpu x naive':>11} "
              f"{'decoded':>7} {'chunks':>6}")
    print(header)
    print("-" * len(header))
    rows = []
    for clip in clips:
        seconds = 60 if "_60s" in clip.name else 10
        row = bench_clip(clip, args.repeats if seconds > 10 else args.repeats + 1, have_decord)
        rows.append(row)
        fps = row["fps"]
        x_naive = fps["ours"] / fps["naive"]
        x_decord = fps["ours"] / fps["decord"] if "decord" in fps else float("nan")
        print(f"{row['res'] + ' ' + str(row['seconds']) + 's':<10} {row['total']:>6} "
              f"{row['n']:>4} {row['size']:>8} {fps['ours']:>9.1f} {fps['naive']:>9.1f} "
              f"{fps.get('decord', float('nan')):>10.1f} {x_naive:>8.2f} {x_decord:>8.2f} "
              f"{row['cpu']['naive'] / row['cpu']['ours']:>11.2f} {row['decoded']:>7} "
              f"{row['chunks']:>6}", flush=True)
    print()
    print("fps = sampled frames delivered per second of wall time (best run). 'cpu x naive' = "
          "naive CPU seconds / ours (all threads): the gain without parallelism, which is what\n"
          "extract_frames gets when its worker processes already fill every core. 'decoded' = "
          "frames our reader decoded (non-reference frames between wanted ones are skipped);\n"
          "'chunks' = parts of the video decoded in parallel (1: FFmpeg frame threading).")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"total {time.perf_counter() - started:.1f} s")
    if args.quick:
        return 0
    long = [r for r in rows if r["seconds"] >= 60]
    x = statistics.median(r["fps"]["ours"] / r["fps"]["naive"] for r in long)
    y = (statistics.median(r["fps"]["ours"] / r["fps"]["decord"] for r in long)
         if have_decord else float("nan"))
    print(f"speedup_vs_decode_all: {x:.2f}")
    print(f"speedup_vs_decord: {y:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
