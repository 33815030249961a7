"""Stage `publish`: gate the trained model on its evaluation, package it, upload it.

Reads ``<paths.evaluation>/metrics.json`` (and ``table.md``) from stage evaluate and the model
in ``paths.trained``; writes ``<paths.reports>/gate.md``, the package in ``paths.package`` and
``<paths.reports>/publish.json``. A failed gate stops the stage before anything is built or
uploaded (:class:`~videorft.publish.gate.GateFailedError`), so a regressed model never reaches
a registry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from videorft.errors import DataValidationError, StageError
from videorft.evaluation.report import table_from_report
from videorft.io import atomic_write_json, atomic_write_text, read_json
from videorft.params import Params
from videorft.publish.gate import GateFailedError, check_gate, format_gate_report
from videorft.publish.lineage import collect_lineage
from videorft.publish.package import build_package
from videorft.publish.targets import publish

log = logging.getLogger(__name__)


def _read_metrics(evaluation: Path) -> tuple[dict[str, Any], str]:
    path = evaluation / "metrics.json"
    if not path.is_file():
        raise StageError(f"{path}: no evaluation metrics; run the evaluate stage first")
    try:
        metrics = read_json(path)
    except DataValidationError as exc:
        raise StageError(str(exc)) from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("models"), dict):
        raise StageError(f"{path}: expected {{'models': {{model: {{source: {{task: ...}}}}}}}}")
    table = evaluation / "table.md"
    if table.is_file():
        return metrics, table.read_text(encoding="utf-8")
    return metrics, table_from_report(metrics)  # no table.md (an older evaluation): rebuild it


def run(params: Params, root: Path) -> dict[str, Any]:
    root = Path(root)
    reports = root / params.paths.reports
    cfg = params.publish
    if not cfg.enabled:
        summary: dict[str, Any] = {"enabled": False}
        atomic_write_json(reports / "publish.json", summary)
        log.info("publish: disabled (publish.enabled: false)")
        return summary
    metrics, table_md = _read_metrics(root / params.paths.evaluation)
    gate = check_gate(metrics, cfg.gate, baseline=params.evaluate.baseline)
    atomic_write_text(reports / "gate.md", format_gate_report(gate))
    if not gate.passed:
        verdict = {"name": cfg.name, "published": False, "gate": gate.as_dict()}
        atomic_write_json(reports / "publish.json", verdict)
        raise GateFailedError(gate, summary=verdict)
    params_dict = params.model_dump(mode="json")
    manifest = build_package(
        root / params.paths.trained, root / params.paths.package, name=cfg.name,
        metrics=metrics, table_md=table_md, params_dict=params_dict,
        lineage=collect_lineage(root, params), gate_report=gate,
    )
    results = publish(root / params.paths.package, cfg.targets, name=cfg.name,
                      version=manifest["version"], root=root)
    summary = {"name": cfg.name, "version": manifest["version"], "published": True,
               "package": params.paths.package, "targets": results, "gate": gate.as_dict()}
    atomic_write_json(reports / "publish.json", summary)
    for result in results:
        log.info("publish: %s -> %s (%s)", result["type"], result["location"], result["status"])
    return summary
