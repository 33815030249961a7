"""``extract_frames.executor: local``: the items run in a pool of local worker processes.

A pebble ``ProcessPool`` rather than ``concurrent.futures``: it can kill the one process whose
item passes ``timeout_s`` (a hung decoder) and report a crashed one, while the others go on.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pebble import ProcessExpired, ProcessPool

from videorft.errors import StageError
from videorft.video import decode
from videorft.video.plan import ExtractionItem
from videorft.video.results import (
    Outcome,
    Results,
    collect_results,
    died_reason,
    timeout_reason,
    unexpected_reason,
)
from videorft.video.sampling import SamplingConfig
from videorft.video.worker import extract_one, worker_init

if TYPE_CHECKING:
    from videorft.params import ExtractFramesParams


def run_pool(
    todo: list[ExtractionItem],
    raw_root: Path,
    items_dir: Path,
    cfg: SamplingConfig,
    params: ExtractFramesParams,
    progress: bool,
) -> Results:
    """Extract ``todo`` in worker processes; returns (metas by key, failure reasons by key)."""
    if not todo:
        return {}, {}
    workers = min(params.workers, len(todo))
    pool = ProcessPool(
        max_workers=workers,
        initializer=worker_init,
        initargs=(max(1, decode.DECODE_THREADS // workers),),
        context=multiprocessing.get_context("spawn"),  # never fork a threaded parent
    )

    def outcome(future: Any, item: ExtractionItem) -> Outcome:
        try:
            return future.result()
        except FutureTimeoutError:
            return {"error": timeout_reason(item, params.timeout_s)}
        except BrokenProcessPool as exc:
            raise StageError(
                f"extract_frames: the worker processes died or could not start ({exc}). "
                "Workers are spawned: a script that calls extract_frames must guard "
                "its entry point with `if __name__ == '__main__':`."
            ) from exc
        except ProcessExpired as exc:
            return {"error": died_reason(item, exc.exitcode)}
        except Exception as exc:  # a bug or an unexpected library error: keep going
            return {"error": unexpected_reason(item, exc)}

    try:
        futures = {
            pool.schedule(
                extract_one,
                args=(item, str(raw_root), str(items_dir), cfg.as_dict(), params.backend),
                timeout=params.timeout_s,
            ): item
            for item in todo
        }
        results = collect_results(futures, as_completed(futures), outcome, progress=progress)
        pool.close()
    except BaseException:
        pool.stop()
        raise
    finally:
        pool.join()
    return results
