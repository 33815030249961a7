"""What becomes of each extracted item, whichever executor ran it: its meta, or a quarantine
reason.

Both executors (:mod:`videorft.video.local_pool`, :mod:`videorft.video.dask_cluster`) feed
their finished futures through :func:`collect_results`, and name failures with the reason
functions below: the quarantine report must be the same bytes whichever executor made it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from tqdm import tqdm

from videorft.video.plan import ExtractionItem

#: (metas by key, quarantine reasons by key) of the items an executor ran.
Results = tuple[dict[str, dict[str, Any]], dict[str, str]]
#: One item's outcome, as :func:`videorft.video.worker.extract_one` returns it:
#: ``{"meta": ...}`` or ``{"error": reason}``.
Outcome = dict[str, Any]

F = TypeVar("F")


# The same words whichever executor ran the item: the quarantine report must not depend on it.
def timeout_reason(item: ExtractionItem, timeout_s: float) -> str:
    return f"{item.source}: timed out after {timeout_s:g} s (decoder hung or video too slow); " \
           "worker killed"


def died_reason(item: ExtractionItem, exitcode: int | None) -> str:
    return f"{item.source}: decoder process died (exit code {exitcode})"


def unexpected_reason(item: ExtractionItem, exc: BaseException) -> str:
    return f"{item.source}: unexpected {type(exc).__name__}: {exc}"


def quarantine_entry(item: ExtractionItem, reason: str) -> dict[str, Any]:
    """The item's line in quarantine.json: which source failed, why, and whose records."""
    return {
        "key": item.key,
        "video": item.video,
        "frames": list(item.frames) if item.frames is not None else None,
        "reason": reason,
        "record_ids": list(item.record_ids),
    }


def collect_results(
    futures: Mapping[F, ExtractionItem],
    completed: Iterable[F],
    outcome: Callable[[F, ExtractionItem], Outcome],
    *,
    progress: bool,
) -> Results:
    """Sort the outcomes of ``futures`` (each the future of its item) into metas and failure
    reasons, as ``completed`` yields them, with a progress bar.

    ``outcome`` is the executor's part: the future's result, or the reason it failed (a
    timeout, a dead process); it raises to fail the stage (a broken pool, a worker that cannot
    do the work), which leaves the bar and the loop at once.
    """
    metas: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    with tqdm(total=len(futures), desc="extract_frames", unit="video",
              disable=not progress) as bar:
        for future in completed:
            item = futures[future]
            result = outcome(future, item)
            if "meta" in result:
                metas[item.key] = result["meta"]
            else:
                failures[item.key] = result["error"]
            bar.update(1)
    return metas, failures
