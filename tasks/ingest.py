"""Ingest: read one data source into the standard columns, cleaned and fingerprinted.

Side effect: writes ``<dir>/<name>.parquet`` and ``<dir>/<name>.json`` (the report).
"""

from __future__ import annotations

from pathlib import Path

import datasets
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from embedforge.config.ingest import IngestConfig
from embedforge.hashing import frame_digest
from embedforge.logs import run_logger
from embedforge.standardize import read_source
from embedforge.types import IngestReport


def fingerprint(data: datasets.Dataset) -> str:
    """A content hash of the rows, independent of where they came from."""
    return frame_digest(data.to_pandas())


# Cached on the recipe section and this module's code: a retry or resume reads the same rows again.
@task(name="ingest-dataset", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def ingest_dataset(config: IngestConfig, out_dir: str) -> IngestReport:
    """Read the source, keep the standard columns, clean it; return its report, with the parquet file's path."""
    data, origin, dropped = read_source(config)
    report = _write(data, config, origin, dropped, Path(out_dir))
    run_logger().info(
        "Ingested %d rows of %s from %s; dropped %s; fingerprint %s",
        report.rows,
        report.label,
        origin,
        dropped,
        report.fingerprint,
    )
    return report


def _write(data: datasets.Dataset, config: IngestConfig, origin: str, dropped: dict, out: Path) -> IngestReport:
    out.mkdir(parents=True, exist_ok=True)
    parquet = out / f"{config.label}.parquet"
    data.to_parquet(str(parquet))
    report = IngestReport(
        name=config.name,
        label=config.label,
        kind=config.kind,
        path=str(parquet),
        source=origin,
        revision=config.revision,
        rows=len(data),
        dropped=dropped,
        fingerprint=fingerprint(data),
    )
    (out / f"{config.label}.json").write_text(report.model_dump_json(indent=2))
    return report
