"""ActivityNet Captions (temporal grounding, the paper's out-of-domain test): one record per
(video, sentence).

The annotation is the JSON form shared with Charades-STA: ``{video_id: {"duration": s,
"timestamps": [[s, e], ...], "sentences": [...]}}`` with ids such as ``v_QOlSCBRmfWY``.
Default ``annotation``: ``val_2.json`` (the split the paper and most grounding work evaluate on;
set ``annotation: train.json`` or ``val_1.json`` for the others). Record ids are
``<source name>/<video_id>_<n>``; the video is ``<source folder>/<video_dir>/<video_id>
<video_ext>`` relative to the data root. ActivityNet's end times sometimes run a little past the
stated duration: the download stage's ``duration_tolerance_s`` is forwarded here for that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from videorft.io import read_json
from videorft.params import SourceParams
from videorft.sources._common import OnInvalid, annotation_path, emit, root_relative
from videorft.sources.charades_sta import json_form_items

DEFAULT_ANNOTATION = "val_2.json"


def parse(
    config: SourceParams,
    folder: Path,
    raw_root: Path,
    *,
    duration_tolerance: float = 0.0,
    on_invalid: OnInvalid | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of an ActivityNet Captions JSON annotation."""
    path = annotation_path(config, folder, DEFAULT_ANNOTATION)
    items = json_form_items(config, path, read_json(path), root_relative(folder, raw_root))
    return emit(items, empty_file=str(path), duration_tolerance=duration_tolerance,
                on_invalid=on_invalid)
