"""Helpers shared by the dataset sources: paths, option letters, answers and the record stream.

Every source builds a stream of ``(record or error, file)`` items and hands it to :func:`emit`,
which validates each record (``videorft.records.validate_record``), refuses duplicate ids and
either raises the first problem or, when the caller passes ``on_invalid``, reports it and
skips the item. That way one malformed annotation line does not have to stop a whole dataset
when the download stage runs with ``on_invalid: skip``, and every error still names the
annotation file and the record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from videorft.errors import DataValidationError
from videorft.io import check_relative_path
from videorft.records import OPTION_LETTERS, validate_record

OnInvalid = Callable[[DataValidationError], None]
Item = tuple[dict[str, Any] | DataValidationError, str]

# Extensions treated as "already a video file name": no config.video_ext is appended to them.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".wmv", ".3gp"}
)

# "(A) text", "(A)text", "A. text", "A: text", "A) text". A bare "A text" is not a prefix:
# too many real options start with the article "A".
_OPTION_PREFIX = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])[.:)])\s*(.*)$", re.DOTALL)
_LETTER_ANSWER = re.compile(r"^\s*\(?([A-Z])\)?[.:]?\s*$")


def annotation_path(config: Any, folder: Path, default: str) -> Path:
    """``folder / (config.annotation or default)``; the annotation must stay inside folder."""
    rel = config.annotation or default
    return Path(folder) / check_relative_path(rel, file=f"{config.name}: annotation")


def root_relative(path: str | os.PathLike, raw_root: str | os.PathLike) -> str:
    """`path` as a POSIX path relative to raw_root (records never hold absolute paths)."""
    absolute, root = os.path.abspath(path), os.path.abspath(raw_root)
    try:
        rel = Path(absolute).relative_to(root)
    except ValueError:
        raise DataValidationError(
            f"{absolute!r} is not inside the data root {root!r}", file=str(path)
        ) from None
    return rel.as_posix() if rel.parts else "."


def video_path(
    folder_rel: str, video_dir: str, video: Any, video_ext: str, *, file: str, record: str
) -> str:
    """``<folder_rel>/<video_dir>/<video><video_ext>``, refusing ids that escape the root.

    The extension is not added again when the annotation already names a video file.
    """
    if isinstance(video, int) and not isinstance(video, bool):
        video = str(video)  # NExT-QA style numeric video ids
    if not isinstance(video, str) or not video.strip():
        raise DataValidationError(f"missing or empty video id {video!r}", file=file, record=record)
    video = check_relative_path(video.strip(), file=file, record=record)
    directory = check_relative_path(video_dir, file=file, record=record) if video_dir else "."
    if PurePosixPath(video).suffix.lower() not in VIDEO_EXTENSIONS:
        video += video_ext
    return PurePosixPath(folder_rel, directory, video).as_posix()


def native_id(value: Any, *, file: str, record: str) -> str:
    """An annotation's own id as a non-empty string (JSON ids may be numbers)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise DataValidationError(f"missing or invalid id {value!r}", file=file, record=record)
    return str(value).strip()


def require_fields(item: Any, fields: Iterable[str], *, file: str, record: str) -> None:
    """Raise naming every missing field at once (a user fixes them in one go)."""
    if not isinstance(item, dict):
        raise DataValidationError(
            f"expected a JSON object, got {type(item).__name__}", file=file, record=record
        )
    missing = [name for name in fields if item.get(name) is None]
    if missing:
        raise DataValidationError(
            f"missing field(s): {', '.join(missing)}", file=file, record=record
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_seconds(value: Any) -> Any:
    """A JSON number as float; anything else unchanged, so validation reports it verbatim."""
    return float(value) if _is_number(value) else value


def as_span(value: Any) -> Any:
    """``[s, e]`` of numbers as floats; anything else unchanged for validation to report."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value)):
        return [float(value[0]), float(value[1])]
    return value


def clean_text(value: Any) -> Any:
    """A string without surrounding whitespace; anything else unchanged for validation."""
    return value.strip() if isinstance(value, str) else value


def strip_option_prefixes(options: list[Any]) -> list[Any]:
    """Drop "(A) " / "A. " style prefixes when every option carries its own letter in order.

    Canonical options are plain texts; the prompt builder adds the letters back. Options are
    left alone unless all of them are prefixed A, B, C, ... in order, so a text that merely
    starts with "A." is never mangled.
    """
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        return options
    if len(options) > len(OPTION_LETTERS):
        return [o.strip() for o in options]
    stripped = []
    for letter, option in zip(OPTION_LETTERS, options, strict=False):
        match = _OPTION_PREFIX.match(option)
        if match is None or (match.group(1) or match.group(2)) != letter:
            return [o.strip() for o in options]
        stripped.append(match.group(3).strip())
    return stripped


def _normal(text: str) -> str:
    return " ".join(text.split()).rstrip(".").casefold()


def answer_letter(
    answer: Any, raw_options: list[Any], options: list[Any], *, file: str, record: str
) -> str:
    """The answer's option letter, from "B", "(B)", "B.", a 0-based index, or an option's text.

    A letter beyond the options is returned as is: record validation reports it with the
    valid range. Text is matched against the options as written, then (ignoring case, spacing
    and a final period) against the texts without their prefixes.
    """
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(OPTION_LETTERS):
            return OPTION_LETTERS[answer]
        raise DataValidationError(
            f"answer index {answer} is out of range for {len(options)} options",
            file=file,
            record=record,
        )
    if not isinstance(answer, str) or not answer.strip():
        raise DataValidationError(f"missing or empty answer {answer!r}", file=file, record=record)
    letter = _LETTER_ANSWER.match(answer)
    if letter:
        return letter.group(1)
    if isinstance(raw_options, list):
        for i, option in enumerate(raw_options[: len(OPTION_LETTERS)]):
            if isinstance(option, str) and option.strip() == answer.strip():
                return OPTION_LETTERS[i]
    if isinstance(options, list):
        for i, option in enumerate(options[: len(OPTION_LETTERS)]):
            if isinstance(option, str) and _normal(option) == _normal(answer):
                return OPTION_LETTERS[i]
    prefixed = _OPTION_PREFIX.match(answer)
    if prefixed:  # "(C) some text" where the text is worded differently from option C
        return (prefixed.group(1) or prefixed.group(2)).upper()
    raise DataValidationError(
        f"answer {answer!r} is neither an option letter nor the text of an option",
        file=file,
        record=record,
    )


def read_text(path: Path) -> str:
    """A text annotation file, with a clear error for missing or non-UTF-8 files."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataValidationError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise DataValidationError("expected a file, found a folder", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text ({exc.reason})", file=str(path)) from None


def converted(
    entries: Iterable[tuple[Any, Any]],
    convert: Callable[[Any, Any], list[dict[str, Any]]],
    file: str,
) -> Iterator[Item]:
    """Run ``convert(key, raw)`` per annotation entry; its error becomes an item, not a raise.

    One entry may give several records (a video with several sentences); an entry whose
    conversion fails gives its DataValidationError, which :func:`emit` raises or reports.
    """
    for key, raw in entries:
        try:
            records = convert(key, raw)
        except DataValidationError as exc:
            yield exc, exc.file or file
            continue
        for record in records:
            yield record, file


def emit(
    items: Iterable[Item],
    *,
    empty_file: str,
    duration_tolerance: float = 0.0,
    on_invalid: OnInvalid | None = None,
) -> Iterator[dict[str, Any]]:
    """Validate each record, refuse duplicate ids, and raise (or report and skip) problems.

    Mirrors ``validate_records`` but names each item's own file (GOT-10k has one per
    sequence) and lets ``on_invalid`` skip bad items. An annotation without a single item is an
    error: it almost always means a wrong ``annotation`` setting.
    """
    seen: set[str] = set()
    count = 0
    for item, file in items:
        count += 1
        try:
            if isinstance(item, DataValidationError):
                raise item
            validate_record(item, file=file, duration_tolerance=duration_tolerance)
            if item["id"] in seen:
                raise DataValidationError("duplicate id", file=file, record=item["id"])
        except DataValidationError as exc:
            if on_invalid is None:
                raise
            on_invalid(exc)
            continue
        seen.add(item["id"])
        yield item
    if count == 0:
        raise DataValidationError("no samples found (is 'annotation' right?)", file=empty_file)
