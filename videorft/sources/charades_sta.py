"""Charades-STA (temporal grounding): one record per (video, sentence).

Two annotation formats are accepted, told apart by content (a file whose first non-blank
character is ``{`` is JSON, anything else the text format), so the file name does not matter:

- the original text release, one query per line: ``VIDEO_ID START END##sentence.``
  (``3MSZA 24.3 30.4##person turn a light on.``). It states no video duration, so records get
  ``duration: null`` (frame extraction measures it) unless ``options.durations`` names one or
  more Charades CSVs (``Charades_v1_train.csv``: columns ``id`` and ``length``, in seconds),
  relative to the source folder;
- the paper's JSON form ``{video_id: {"duration": s, "timestamps": [[s, e], ...],
  "sentences": [...]}}`` (ActivityNet Captions uses the same form, see ``activitynet``).

Default ``annotation``: ``charades_sta_train.txt`` (the official training file's name).
Record ids are ``<source name>/<video_id>_<n>``, ``n`` counting the video's sentences from 0
in file order; the query is the sentence without its trailing period and whitespace; the video
is ``<source folder>/<video_dir>/<video_id><video_ext>`` relative to the data root.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from videorft.errors import DataValidationError
from videorft.io import check_relative_path, read_json
from videorft.params import SourceParams
from videorft.records import make_record
from videorft.sources._common import (
    Item,
    OnInvalid,
    annotation_path,
    as_seconds,
    as_span,
    converted,
    emit,
    read_text,
    require_fields,
    root_relative,
    video_path,
)

DEFAULT_ANNOTATION = "charades_sta_train.txt"
TASK = "temporal_grounding"
# VIDEO_ID START END##sentence ; the numbers are checked by float() for a precise message.
_LINE = re.compile(r"^(\S+)\s+(\S+)\s+([^\s#]+)\s*##(.*)$")


def parse(
    config: SourceParams,
    folder: Path,
    raw_root: Path,
    *,
    duration_tolerance: float = 0.0,
    on_invalid: OnInvalid | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of a Charades-STA annotation in either the text or the JSON form."""
    path = annotation_path(config, folder, DEFAULT_ANNOTATION)
    text = read_text(path)
    folder_rel = root_relative(folder, raw_root)
    if text.lstrip().startswith("{"):
        items = json_form_items(config, path, read_json(path), folder_rel)
    else:
        durations = load_durations(config, Path(folder))
        items = _text_items(config, path, text, folder_rel, durations)
    return emit(items, empty_file=str(path), duration_tolerance=duration_tolerance,
                on_invalid=on_invalid)


def query_text(sentence: Any) -> Any:
    """The sentence as a query: trailing period and surrounding whitespace removed."""
    return sentence.strip().rstrip(".").strip() if isinstance(sentence, str) else sentence


def json_form_items(
    config: SourceParams, path: Path, data: Any, folder_rel: str
) -> Iterator[Item]:
    """Items of the ``{video_id: {duration, timestamps, sentences}}`` form (shared with
    ActivityNet Captions)."""
    file = str(path)
    if not isinstance(data, dict):
        raise DataValidationError(
            "expected a JSON object {video_id: {duration, timestamps, sentences}}, got "
            f"{type(data).__name__}",
            file=file,
        )

    def convert(video_id: str, entry: Any) -> list[dict[str, Any]]:
        require_fields(entry, ("timestamps", "sentences"), file=file, record=video_id)
        spans, sentences = entry["timestamps"], entry["sentences"]
        if not isinstance(spans, list) or not isinstance(sentences, list):
            raise DataValidationError("timestamps and sentences must be lists", file=file,
                                      record=video_id)
        if len(spans) != len(sentences):
            raise DataValidationError(
                f"{len(spans)} timestamps but {len(sentences)} sentences", file=file,
                record=video_id,
            )
        video = video_path(folder_rel, config.video_dir, video_id, config.video_ext,
                           file=file, record=video_id)
        return [
            make_record(
                id=f"{config.name}/{video_id}_{n}",
                task=TASK,
                source=config.name,
                split=config.split,
                video=video,
                duration=as_seconds(entry.get("duration")),
                inputs={"query": query_text(sentence)},
                solution=as_span(span),
                meta={"video_id": video_id, "sentence_index": n},
            )
            for n, (span, sentence) in enumerate(zip(spans, sentences, strict=True))
        ]

    return converted(data.items(), convert, file)


def _text_items(
    config: SourceParams,
    path: Path,
    text: str,
    folder_rel: str,
    durations: dict[str, float],
) -> Iterator[Item]:
    file = str(path)
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        try:
            if match is None:
                raise DataValidationError(
                    f"line {number}: expected 'VIDEO_ID START END##sentence', got {line!r}",
                    file=file,
                )
            video_id, start, end, sentence = match.groups()
            try:
                span = [float(start), float(end)]
            except ValueError:
                raise DataValidationError(
                    f"line {number}: start and end must be numbers of seconds, got "
                    f"{start!r} and {end!r}",
                    file=file,
                ) from None
            n = counts.get(video_id, 0)
            counts[video_id] = n + 1
            rid = f"{config.name}/{video_id}_{n}"
            record: dict[str, Any] | DataValidationError = make_record(
                id=rid,
                task=TASK,
                source=config.name,
                split=config.split,
                video=video_path(folder_rel, config.video_dir, video_id, config.video_ext,
                                 file=file, record=rid),
                duration=durations.get(video_id),
                inputs={"query": query_text(sentence)},
                solution=span,
                meta={"video_id": video_id, "sentence_index": n, "line": number},
            )
        except DataValidationError as exc:
            record = exc
        yield record, file


def load_durations(config: SourceParams, folder: Path) -> dict[str, float]:
    """Video lengths from ``options.durations`` (Charades CSVs with ``id`` and ``length``)."""
    names = config.options.get("durations")
    if not names:
        return {}
    if isinstance(names, str):
        names = [names]
    durations: dict[str, float] = {}
    for name in names:
        path = folder / check_relative_path(name, file=f"{config.name}: options.durations")
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        if not {"id", "length"} <= set(reader.fieldnames or ()):
            raise DataValidationError(
                f"expected columns 'id' and 'length', got {reader.fieldnames!r}", file=str(path)
            )
        for row in reader:
            try:
                length = float(row["length"])
            except (TypeError, ValueError):
                raise DataValidationError(
                    f"line {reader.line_num}: length {row['length']!r} is not a number",
                    file=str(path),
                ) from None
            durations[row["id"].strip()] = length
    return durations
