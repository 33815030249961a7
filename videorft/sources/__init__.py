"""Dataset sources: each converts one native format into canonical records (videorft.records).

A source module exposes ``parse(config, folder, raw_root) -> Iterator[dict]``: ``folder`` is
where the source's files were fetched (``paths.raw/<name>``), and every path in the yielded
records is relative to ``raw_root`` (``paths.raw``), e.g. ``"charades/videos/3MSZA.mp4"``.
The synthetic source also has ``generate(config, folder)`` which renders its videos in place of
a download.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from videorft.params import SOURCE_TYPES, SourceParams

Parser = Callable[[SourceParams, Path, Path], Iterator[dict[str, Any]]]


def get_parser(source_type: str) -> Parser:
    """The parse function of a source type (modules are imported lazily)."""
    if source_type not in SOURCE_TYPES:
        raise KeyError(f"unknown source type {source_type!r}")
    module = importlib.import_module(f"videorft.sources.{source_type}")
    return module.parse
