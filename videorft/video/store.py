"""The frame store's read side: what dataset building, training and evaluation load.

extract_frames (:mod:`videorft.video.extract`) writes the store: one ``.npy`` per video under
``items/`` and ``manifest.json`` naming each item's file, sampled indices, timestamps, sample
fps and sha256; failed videos are listed in ``quarantine.json``. Readers need only this module,
not the extraction machinery.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from videorft.io import read_json, sha256_file

ITEMS_DIR = "items"
MANIFEST = "manifest.json"
QUARANTINE = "quarantine.json"


class FrameStore:
    """Read access to a frame store (dataset building, training)."""

    def __init__(self, store_dir: str | os.PathLike):
        self.store_dir = Path(store_dir)
        self.items_dir = self.store_dir / ITEMS_DIR
        self._manifest: dict[str, Any] | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            path = self.store_dir / MANIFEST
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no frame store manifest (run extract_frames)")
            self._manifest = read_json(path)
        return self._manifest

    def keys(self) -> list[str]:
        return sorted(self.manifest["items"])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.manifest["items"]

    def __len__(self) -> int:
        return len(self.manifest["items"])

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def meta(self, key: str) -> dict[str, Any]:
        """The item's meta: indices, timestamps, sample_fps (pass it to the processor), ..."""
        try:
            return self.manifest["items"][key]
        except KeyError:
            raise KeyError(f"{key!r} is not in the frame store {self.store_dir}") from None

    def load(self, key: str) -> np.ndarray:
        """uint8 [T, H, W, 3], memory-mapped read-only."""
        meta = self.meta(key)
        return np.load(self.items_dir / meta["file"], mmap_mode="r", allow_pickle=False)

    def verify(self, key: str) -> bool:
        """Whether the .npy on disk still has the sha256 recorded at extraction."""
        meta = self.meta(key)
        return sha256_file(self.items_dir / meta["file"]) == meta["sha256"]

    def quarantine(self) -> list[dict[str, Any]]:
        path = self.store_dir / QUARANTINE
        return read_json(path) if path.is_file() else []
