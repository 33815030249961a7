"""Generic multiple-choice video QA (MVBench, VideoMME, PerceptionTest style benchmarks).

The annotation is a JSON list, or JSONL when the file name ends in ``.jsonl``, of

``{"id", "video", "question", "options": [...], "answer", "duration"?, ...}``

- options may carry letter prefixes (``"(A) ..."``, ``"A. ..."``): they are dropped when every
  option has its own letter in order, since canonical options are plain texts;
- ``answer`` may be a letter (``"B"``, ``"(B)"``, ``"B."``), the text of an option (mapped to
  its letter) or a 0-based option index;
- common aliases of other releases are read too: ``question_id`` for ``id``, ``video_id`` /
  ``videoID`` for ``video``, ``candidates`` (MVBench) for ``options``, ``answer_id``
  (PerceptionTest) for ``answer``. An item with no id at all gets its 0-based position;
- ``duration`` is used when it is a number of seconds; otherwise (VideoMME's ``"short"``) it
  stays in ``meta`` only, and the video length is measured at frame extraction.

Default ``annotation``: ``mcq.json``. Record ids are ``<source name>/<id>``; the video is
``<source folder>/<video_dir>/<video><video_ext>`` (no extension is added when the
annotation already names a video file); ``meta`` keeps the native id, the video id and every
other field (task type, domain, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from videorft.errors import DataValidationError
from videorft.io import read_json, read_jsonl
from videorft.params import SourceParams
from videorft.records import make_record
from videorft.sources._common import (
    OnInvalid,
    annotation_path,
    answer_letter,
    clean_text,
    converted,
    emit,
    native_id,
    root_relative,
    strip_option_prefixes,
    video_path,
)

DEFAULT_ANNOTATION = "mcq.json"
# canonical name -> accepted spellings, first found wins
_ALIASES = {
    "id": ("id", "question_id"),
    "video": ("video", "video_id", "videoID"),
    "question": ("question",),
    "options": ("options", "candidates"),
    "answer": ("answer", "answer_id"),
    "duration": ("duration",),
}


def _field(item: dict[str, Any], name: str) -> tuple[str | None, Any]:
    for key in _ALIASES[name]:
        if item.get(key) is not None:
            return key, item[key]
    return None, None


def parse(
    config: SourceParams,
    folder: Path,
    raw_root: Path,
    *,
    duration_tolerance: float = 0.0,
    on_invalid: OnInvalid | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of a multiple-choice JSON list or JSONL file."""
    path = annotation_path(config, folder, DEFAULT_ANNOTATION)
    file = str(path)
    if path.suffix.lower() == ".jsonl":
        if not path.is_file():
            raise DataValidationError("file not found", file=file)
        data: Any = read_jsonl(path)
    else:
        data = read_json(path)
        if not isinstance(data, list):
            raise DataValidationError(
                f"expected a JSON list of questions, got {type(data).__name__}", file=file
            )
    folder_rel = root_relative(folder, raw_root)

    def convert(index: int, item: Any) -> list[dict[str, Any]]:
        where = f"item {index}"
        if not isinstance(item, dict):
            raise DataValidationError(f"expected a JSON object, got {type(item).__name__}",
                                      file=file, record=where)
        found = {name: _field(item, name) for name in _ALIASES}
        id_key, raw_id = found["id"]
        qid = native_id(raw_id, file=file, record=where) if id_key else str(index)
        rid = f"{config.name}/{qid}"
        missing = [name for name in ("video", "question", "options", "answer")
                   if found[name][0] is None]
        if missing:
            raise DataValidationError(f"missing field(s): {', '.join(missing)}", file=file,
                                      record=rid)
        raw_options = found["options"][1]
        options = strip_option_prefixes(raw_options)
        duration = found["duration"][1]
        consumed = {key for key, _ in found.values() if key is not None}
        meta: dict[str, Any] = {"native_id": qid, "video_id": str(found["video"][1])}
        if duration is not None and not _is_seconds(duration):
            meta["duration"] = duration
        meta.update({k: v for k, v in item.items() if k not in consumed})
        return [
            make_record(
                id=rid,
                task="mcq",
                source=config.name,
                split=config.split,
                video=video_path(folder_rel, config.video_dir, found["video"][1],
                                 config.video_ext, file=file, record=rid),
                duration=float(duration) if _is_seconds(duration) else None,
                inputs={"question": clean_text(found["question"][1]), "options": options},
                solution={"answer": answer_letter(found["answer"][1], raw_options, options,
                                                  file=file, record=rid)},
                meta=meta,
            )
        ]

    return emit(converted(enumerate(data), convert, file), empty_file=file,
                duration_tolerance=duration_tolerance, on_invalid=on_invalid)


def _is_seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
