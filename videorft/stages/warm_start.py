"""Stage `warm_start`: optional supervised fine-tuning on the training answers before GRPO.

A random (tiny) model never emits the answer format, so GRPO would see all-zero rewards; a few
SFT steps fix that. Off in the paper's recipe: then the stage only writes a marker that passes
the base model on, so `train` always reads one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videorft.io import atomic_write_json
from videorft.model.base import resolve_model, write_skipped
from videorft.params import Params


def run(params: Params, root: Path) -> dict[str, Any]:
    out_dir = root / params.paths.warm_start
    report_path = root / params.paths.reports / "warm_start.json"
    if not params.warm_start.enabled:
        write_skipped(out_dir, params.paths.base_model)
        atomic_write_json(report_path, {"enabled": False})
        return {"enabled": False}
    from videorft.trainer.sft import warm_start

    base = resolve_model(Path(params.paths.base_model), root)
    summary = warm_start(params, root, base_model=base, out_dir=out_dir)
    # The DVC metric: what the warm start achieved, not how long it took (the full summary,
    # loss history included, is saved with the model as warm_start.json).
    metrics = {
        "steps": summary["steps"],
        "loss_first": summary["loss_first"],
        "loss_last": summary["loss_last"],
        **{
            when: {k: v for k, v in summary[when].items() if k not in ("seconds", "examples")}
            for when in ("before", "after")
        },
    }
    atomic_write_json(report_path, {"enabled": True, **metrics})
    return {"enabled": True, "loss_last": summary["loss_last"],
            "format_before": summary["before"]["format"],
            "format_after": summary["after"]["format"]}
