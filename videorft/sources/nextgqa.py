"""NExT-GQA (grounded video QA) in the paper's JSON form: a list of

``{"id", "video", "question", "options": ["(A) ...", ...], "answer": "(C)",
"glue": [[s, e], ...], "duration", "type"}``

Default ``annotation``: ``nextgqa_val.json`` (the paper trains on the *val* split: the train
split has no evidence spans). Options lose their ``(A) `` prefixes (canonical options are plain
texts); the answer becomes its letter (``"(C)"`` -> ``"C"``; ``"C"``, a 0-based index or the
option's text work too). A single span ``[s, e]`` in ``glue`` is read as ``[[s, e]]``. The
video is ``<source folder>/<video_dir>/<video><video_ext>`` relative to the data root (NExT-QA
video ids may contain a folder, ``1164/3238737531``). Record ids are ``<source name>/<id>``;
``meta`` keeps the native id, the video id, ``type`` and every other field of the item.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from videorft.errors import DataValidationError
from videorft.io import read_json
from videorft.params import SourceParams
from videorft.records import make_record
from videorft.sources._common import (
    OnInvalid,
    annotation_path,
    answer_letter,
    as_seconds,
    as_span,
    clean_text,
    converted,
    emit,
    native_id,
    require_fields,
    root_relative,
    strip_option_prefixes,
    video_path,
)

DEFAULT_ANNOTATION = "nextgqa_val.json"
_CONSUMED = ("id", "video", "question", "options", "answer", "glue", "duration")


def parse(
    config: SourceParams,
    folder: Path,
    raw_root: Path,
    *,
    duration_tolerance: float = 0.0,
    on_invalid: OnInvalid | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of a NExT-GQA JSON list."""
    path = annotation_path(config, folder, DEFAULT_ANNOTATION)
    file = str(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataValidationError(f"expected a JSON list of questions, got {type(data).__name__}",
                                  file=file)
    folder_rel = root_relative(folder, raw_root)

    def convert(index: int, item: Any) -> list[dict[str, Any]]:
        where = f"item {index}"
        if isinstance(item, dict) and item.get("id") is not None:
            where = str(item["id"])
        require_fields(item, ("id", "video", "question", "options", "answer", "glue"),
                       file=file, record=where)
        qid = native_id(item["id"], file=file, record=where)
        rid = f"{config.name}/{qid}"
        raw_options = item["options"]
        options = strip_option_prefixes(raw_options)
        glue = item["glue"]
        if isinstance(glue, list) and len(glue) == 2 and not isinstance(glue[0], list):
            glue = [glue]  # a single [s, e] span
        meta = {"native_id": qid, "video_id": str(item["video"])}
        meta.update({k: v for k, v in item.items() if k not in _CONSUMED})
        return [
            make_record(
                id=rid,
                task="grounded_qa",
                source=config.name,
                split=config.split,
                video=video_path(folder_rel, config.video_dir, item["video"], config.video_ext,
                                 file=file, record=rid),
                duration=as_seconds(item.get("duration")),
                inputs={"question": clean_text(item["question"]), "options": options},
                solution={
                    "answer": answer_letter(item["answer"], raw_options, options, file=file,
                                            record=rid),
                    "glue": [as_span(s) for s in glue] if isinstance(glue, list) else glue,
                },
                meta=meta,
            )
        ]

    return emit(converted(enumerate(data), convert, file), empty_file=file,
                duration_tolerance=duration_tolerance, on_invalid=on_invalid)
