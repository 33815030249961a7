"""Publishing a trained model: gate it on its evaluation, package it with its lineage, upload.

- :mod:`~videorft.publish.gate`: no regression against the baseline, minimum metrics;
- :mod:`~videorft.publish.lineage`: git commit, DVC hashes, versions;
- :mod:`~videorft.publish.package`: weights + processor + model card + manifest (checksums,
  content version), and :func:`verify_package`;
- :mod:`~videorft.publish.targets`: local registry folder, S3, Hugging Face Hub; idempotent.

Stage ``publish`` (:mod:`videorft.stages.publish`) runs them in that order.
"""

from __future__ import annotations

from videorft.publish.gate import GateFailedError, GateReport, check_gate, format_gate_report
from videorft.publish.lineage import collect_lineage
from videorft.publish.package import PackageIntegrityError, build_package, verify_package
from videorft.publish.targets import (
    PublishError,
    publish,
    publish_hub,
    publish_local,
    publish_s3,
)

__all__ = [
    "GateFailedError",
    "GateReport",
    "PackageIntegrityError",
    "PublishError",
    "build_package",
    "check_gate",
    "collect_lineage",
    "format_gate_report",
    "publish",
    "publish_hub",
    "publish_local",
    "publish_s3",
    "verify_package",
]
