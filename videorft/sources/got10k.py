"""GOT-10k (object tracking): one record per sequence, eight frames with eight boxes.

``annotation`` (default ``.``, the source folder itself) is either

- a split folder in the official layout: one folder per sequence (``GOT-10k_Train_000001/``)
  holding ``00000001.jpg ...``, ``groundtruth.txt`` (one ``x,y,w,h`` line per frame, pixels),
  ``absence.label`` (one 0/1 per frame, 1 = target absent), ``cover.label`` and
  ``meta_info.ini`` (``object_class: ...`` under ``[METAINFO]``). Sequences are taken in the
  order of the split's ``list.txt`` when there is one, else sorted by name; a folder that itself
  holds ``groundtruth.txt`` is read as a single sequence;
- a JSON file in the paper's form: a list of ``{"path", "object", "gt": [[x0, y0, x1, y1] x
  8]}`` with normalised boxes, ``path`` being the sequence folder relative to the source
  folder (``GOT-10k/train/GOT-10k_Train_008002``). Its boxes are used as given and paired
  with the eight frames chosen by the rule below (the paper does not say which frames its
  boxes belong to; the rule is the natural reading).

Frame choice (the paper feeds 8 frames): the target must be visible in the frames the model is
asked to box, so the eight frames are spread uniformly over the frames *where the target is
present* (absence.label 0; all frames when there is no absence.label):
``present[round(linspace(0, len(present) - 1, 8))]`` with numpy's round-half-to-even. A
sequence with fewer than eight present frames is an error, as is a groundtruth.txt or
absence.label whose line count differs from the number of frame images.

Boxes become ``[x0, y0, x1, y1]`` normalised by the image size, read from the first frame's
header (PIL opens lazily; no frame is decoded). A box up to 1 pixel outside the frame
(annotation rounding) is clipped to it; further out is an error naming groundtruth.txt and its
line. ``frame_times`` are frame index / fps and ``duration`` frame count / fps, with
``options.fps`` (default 10, GOT-10k's annotation rate). ``options.max_sequences`` (default
null: all) keeps the first N sequences. Record ids are ``<source name>/<sequence folder
name>``; the object class has its underscores turned into spaces.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from videorft.errors import ConfigError, DataValidationError
from videorft.io import check_relative_path, read_json, safe_join
from videorft.params import SourceParams
from videorft.records import TRACKING_BOXES, make_record
from videorft.sources._common import (
    Item,
    OnInvalid,
    annotation_path,
    emit,
    read_text,
    require_fields,
    root_relative,
)

DEFAULT_ANNOTATION = "."
DEFAULT_FPS = 10.0
CLIP_PIXELS = 1.0
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
_SEPARATORS = re.compile(r"[,\s]+")


def parse(
    config: SourceParams,
    folder: Path,
    raw_root: Path,
    *,
    duration_tolerance: float = 0.0,
    on_invalid: OnInvalid | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of a GOT-10k split folder or of the paper's JSON list."""
    folder = Path(folder)
    path = annotation_path(config, folder, DEFAULT_ANNOTATION)
    fps, max_sequences = _options(config)
    if path.is_dir():
        items = _folder_items(config, path, raw_root, fps, max_sequences)
    elif path.is_file():
        items = _json_items(config, folder, path, raw_root, fps, max_sequences)
    else:
        raise DataValidationError("not found (expected a GOT-10k split folder or a JSON file)",
                                  file=str(path))
    return emit(items, empty_file=str(path), duration_tolerance=duration_tolerance,
                on_invalid=on_invalid)


def _options(config: SourceParams) -> tuple[float, int | None]:
    fps = config.options.get("fps", DEFAULT_FPS)
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not fps > 0:
        raise ConfigError(f"source {config.name!r}: options.fps must be a positive number, "
                          f"got {fps!r}")
    limit = config.options.get("max_sequences")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"source {config.name!r}: options.max_sequences must be a positive "
                          f"integer or null, got {limit!r}")
    return float(fps), limit


def sample_indices(present: list[int], count: int = TRACKING_BOXES) -> list[int]:
    """``count`` frame indices spread uniformly over the present ones (see module docs)."""
    positions = np.rint(np.linspace(0, len(present) - 1, count)).astype(int)
    return [present[p] for p in positions]


@dataclass
class _Sequence:
    """A sequence folder's frames and which of them show the target."""

    folder: Path
    images: list[Path]
    present: list[int]
    presence_file: Path  # the file that said which frames are present (for error messages)


def _read_sequence(seq_dir: Path, record: str) -> _Sequence:
    if not seq_dir.is_dir():
        raise DataValidationError("sequence folder not found", file=str(seq_dir), record=record)
    images = sorted(p for p in seq_dir.iterdir()
                    if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise DataValidationError("no frame images (00000001.jpg, ...) in the sequence folder",
                                  file=str(seq_dir), record=record)
    absence_file = seq_dir / "absence.label"
    if absence_file.is_file():
        flags = _read_flags(absence_file, record)
        _check_count(absence_file, len(flags), len(images), record)
        present = [i for i, absent in enumerate(flags) if not absent]
        presence_file = absence_file
    else:
        present = list(range(len(images)))
        presence_file = seq_dir
    if len(present) < TRACKING_BOXES:
        raise DataValidationError(
            f"the target is present in only {len(present)} of {len(images)} frames; tracking "
            f"needs at least {TRACKING_BOXES}",
            file=str(presence_file),
            record=record,
        )
    return _Sequence(seq_dir, images, present, presence_file)


def _check_count(file: Path, lines: int, images: int, record: str) -> None:
    if lines != images:
        raise DataValidationError(
            f"{lines} lines for {images} frame images (one line per frame expected)",
            file=str(file),
            record=record,
        )


def _read_flags(path: Path, record: str) -> list[bool]:
    flags = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        value = line.strip()
        if value not in ("0", "1"):
            raise DataValidationError(f"line {number}: expected 0 or 1, got {line!r}",
                                      file=str(path), record=record)
        flags.append(value == "1")
    return flags


def _read_boxes(path: Path, record: str) -> list[list[float]]:
    boxes = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        parts = [p for p in _SEPARATORS.split(line.strip()) if p]
        try:
            box = [float(p) for p in parts]
        except ValueError:
            box = []
        if len(box) != 4:
            raise DataValidationError(f"line {number}: expected 'x,y,w,h', got {line!r}",
                                      file=str(path), record=record)
        boxes.append(box)
    return boxes


def _read_meta_info(path: Path, record: str) -> dict[str, str]:
    """``key: value`` lines of meta_info.ini (a plain parser: values hold ':' and '%')."""
    info: dict[str, str] = {}
    for line in read_text(path).splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.lstrip().startswith(("[", "#", ";")):
            info[key.strip()] = value.strip()
    if not info.get("object_class"):
        raise DataValidationError("no 'object_class: ...' line", file=str(path), record=record)
    return info


def image_size(path: Path, record: str) -> tuple[int, int]:
    """(width, height) from the image header only."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DataValidationError(f"cannot read the image size ({exc})", file=str(path),
                                  record=record) from None


def normalise_box(
    box: list[float], width: int, height: int, *, file: str, record: str, line: int
) -> list[float]:
    """Pixel ``x, y, w, h`` to normalised ``[x0, y0, x1, y1]``, clipping rounding overshoot."""
    x, y, w, h = box
    corners = [x, y, x + w, y + h]
    limits = [width, height, width, height]
    if not all(map(math.isfinite, corners)):
        raise DataValidationError(f"line {line}: box {box!r} is not finite", file=file,
                                  record=record)
    for value, limit in zip(corners, limits, strict=True):
        if value < -CLIP_PIXELS or value > limit + CLIP_PIXELS:
            raise DataValidationError(
                f"line {line}: box x,y,w,h={box!r} lies outside the {width}x{height} frame "
                f"by more than {CLIP_PIXELS:g} pixel",
                file=file,
                record=record,
            )
    x0, y0, x1, y1 = (min(max(v, 0.0), limit) for v, limit in zip(corners, limits, strict=True))
    if x1 <= x0 or y1 <= y0:
        raise DataValidationError(f"line {line}: box x,y,w,h={box!r} is empty", file=file,
                                  record=record)
    return [round(x0 / width, 6), round(y0 / height, 6), round(x1 / width, 6),
            round(y1 / height, 6)]


def _record(
    config: SourceParams,
    rid: str,
    sequence: _Sequence,
    picks: list[int],
    raw_root: Path,
    fps: float,
    object_name: Any,
    solution: Any,
    meta: dict[str, Any],
) -> dict[str, Any]:
    return make_record(
        id=rid,
        task="tracking",
        source=config.name,
        split=config.split,
        frames=[root_relative(sequence.images[i], raw_root) for i in picks],
        frame_times=[i / fps for i in picks],
        duration=len(sequence.images) / fps,
        inputs={"object": object_name.replace("_", " ").strip()
                if isinstance(object_name, str) else object_name},
        solution=solution,
        meta={"sequence": sequence.folder.name, "frame_indices": picks,
              "frame_count": len(sequence.images), **meta},
    )


def _sequence_dirs(root: Path) -> Iterator[tuple[str, Path] | DataValidationError]:
    """(name, folder) of each sequence of a split folder, in list.txt order when present.

    Every sequence must stay inside the split folder, symlinks included.
    """
    if (root / "groundtruth.txt").is_file():
        yield root.name, root
        return
    list_file = root / "list.txt"
    if list_file.is_file():
        listed = [(line.strip(), f"line {number}", str(list_file)) for number, line
                  in enumerate(read_text(list_file).splitlines(), start=1) if line.strip()]
    else:
        listed = [(child.name, child.name, str(root)) for child in sorted(root.iterdir())
                  if child.is_dir() and (child / "groundtruth.txt").is_file()]
    for name, where, file in listed:
        try:
            rel = check_relative_path(name, file=file, record=where)
            safe_join(root, rel, file=file, record=where)
        except DataValidationError as exc:
            yield exc
            continue
        yield PurePosixPath(rel).name, root / rel


def _folder_items(
    config: SourceParams,
    root: Path,
    raw_root: Path,
    fps: float,
    max_sequences: int | None,
) -> Iterator[Item]:
    for count, entry in enumerate(_sequence_dirs(root)):
        if max_sequences is not None and count >= max_sequences:
            return
        if isinstance(entry, DataValidationError):
            yield entry, entry.file or str(root)
            continue
        name, seq_dir = entry
        gt_file = str(seq_dir / "groundtruth.txt")
        try:
            item: Item = (_folder_record(config, name, seq_dir, raw_root, fps), gt_file)
        except DataValidationError as exc:
            item = (exc, exc.file or gt_file)
        yield item


def _folder_record(
    config: SourceParams, name: str, seq_dir: Path, raw_root: Path, fps: float
) -> dict[str, Any]:
    rid = f"{config.name}/{name}"
    sequence = _read_sequence(seq_dir, rid)
    gt_file = seq_dir / "groundtruth.txt"
    boxes = _read_boxes(gt_file, rid)
    _check_count(gt_file, len(boxes), len(sequence.images), rid)
    info = _read_meta_info(seq_dir / "meta_info.ini", rid)
    width, height = image_size(sequence.images[0], rid)
    picks = sample_indices(sequence.present)
    solution = [
        normalise_box(boxes[i], width, height, file=str(gt_file), record=rid, line=i + 1)
        for i in picks
    ]
    return _record(config, rid, sequence, picks, raw_root, fps, info["object_class"], solution,
                   {"image_size": [width, height], "meta_info": info})


def _json_items(
    config: SourceParams,
    folder: Path,
    path: Path,
    raw_root: Path,
    fps: float,
    max_sequences: int | None,
) -> Iterator[Item]:
    file = str(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataValidationError(
            f"expected a JSON list of {{path, object, gt}}, got {type(data).__name__}", file=file
        )
    for index, entry in enumerate(data[:max_sequences]):
        try:
            item: Item = (_json_record(config, folder, file, index, entry, raw_root, fps), file)
        except DataValidationError as exc:
            item = (exc, exc.file or file)
        yield item


def _json_record(
    config: SourceParams,
    folder: Path,
    file: str,
    index: int,
    item: Any,
    raw_root: Path,
    fps: float,
) -> dict[str, Any]:
    where = f"item {index}"
    require_fields(item, ("path", "object", "gt"), file=file, record=where)
    rel = check_relative_path(item["path"], file=file, record=where)
    safe_join(folder, rel, file=file, record=where)
    rid = f"{config.name}/{PurePosixPath(rel).name}"
    sequence = _read_sequence(folder / rel, rid)
    gt = item["gt"]
    solution = [
        [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in box]
        if isinstance(box, list) else box
        for box in gt
    ] if isinstance(gt, list) else gt
    return _record(config, rid, sequence, sample_indices(sequence.present), raw_root, fps,
                   item["object"], solution, {"path": rel})
