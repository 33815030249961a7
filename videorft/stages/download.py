"""Stage `download`: fetch (or generate) every source, convert to canonical records.

Outputs ``paths.raw/<source>/`` (persisted across runs, so a re-run only fetches what changed),
``paths.records`` (all sources' records, validated, sorted by id) and
``paths.reports/rejects.json`` (records left out under ``on_invalid: skip``, with the reason).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from videorft.download import ArchiveLimits, fetch
from videorft.errors import ConfigError
from videorft.io import atomic_write_json, write_jsonl
from videorft.params import Params
from videorft.records import validate_records
from videorft.sources import get_parser, synthetic


def run(params: Params, root: Path) -> dict[str, Any]:
    cfg = params.download
    raw_root = root / params.paths.raw
    rejects: list[str] = []
    on_invalid = (lambda err: rejects.append(str(err))) if cfg.on_invalid == "skip" else None
    records: list[dict[str, Any]] = []
    for source in cfg.sources:
        folder = raw_root / source.name
        if source.type == "synthetic":
            synthetic.generate(source, folder)
        elif source.uri is None:
            raise ConfigError(f"params.yaml: download.sources[{source.name!r}] needs a 'uri'")
        else:
            fetch(
                source.uri,
                folder,
                sha256=source.sha256,
                s3=cfg.s3,
                http_timeout_s=cfg.http_timeout_s,
                archive_limits=ArchiveLimits(max_bytes=int(cfg.max_unpacked_gb * 10**9),
                                             max_ratio=cfg.max_compression_ratio),
            )
        parse = get_parser(source.type)
        records.extend(
            parse(
                source,
                folder,
                raw_root,
                duration_tolerance=cfg.duration_tolerance_s,
                on_invalid=on_invalid,
            )
        )
    # Each source prefixes ids with its name; check uniqueness across sources all the same.
    records_file = root / params.paths.records
    records = sorted(
        validate_records(
            records, file=str(records_file), duration_tolerance=cfg.duration_tolerance_s
        ),
        key=lambda r: r["id"],
    )
    write_jsonl(records_file, records)
    atomic_write_json(root / params.paths.reports / "rejects.json", rejects)
    counts = Counter((r["source"], r["task"]) for r in records)
    return {
        "records": len(records),
        "rejected": len(rejects),
        "by_source_task": {f"{s}/{t}": n for (s, t), n in sorted(counts.items())},
    }
