"""Stage `base_model`: build the tiny default model, or pin the hub/local model to start from.

Writes ``paths.base_model`` (the tiny model itself, or ``model_info.json`` naming the hub
commit / local folder) and ``paths.reports/base_model.json`` for lineage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videorft.io import atomic_write_json
from videorft.model.base import prepare_base_model
from videorft.params import Params


def run(params: Params, root: Path) -> dict[str, Any]:
    info = prepare_base_model(params.model, root / params.paths.base_model)
    atomic_write_json(root / params.paths.reports / "base_model.json", info)
    return {key: info[key] for key in ("source", "name_or_path") if key in info}
