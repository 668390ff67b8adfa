"""Ingest: read one data source into the standard columns, cleaned and fingerprinted.

Side effect: writes ``<dir>/<name>.parquet`` and ``<dir>/<name>.json`` (the report).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from embedforge import datafiles
from embedforge.columns import STANDARD_COLUMNS, TEXT_COLUMNS
from embedforge.config.ingest import IngestConfig
from embedforge.errors import EmbedforgeError
from embedforge.hashing import frame_digest
from embedforge.logs import run_logger
from embedforge.types import IngestReport


def _standardize(data: datasets.Dataset, config: IngestConfig, origin: str) -> datasets.Dataset:
    required, optional = STANDARD_COLUMNS[config.kind]
    mapping = {standard: config.columns.get(standard, standard) for standard in required + optional}
    missing = [
        f"{std} (from {src!r})" if src != std else std
        for std, src in mapping.items()
        if std in required and src not in data.column_names
    ]
    if missing:
        raise EmbedforgeError(
            f"ingest: {origin}: missing column {', '.join(missing)}; it has {data.column_names}. "
            "Map columns with ingest.columns."
        )
    for column, value in config.where.items():
        if column not in data.column_names:
            raise EmbedforgeError(
                f"ingest: {origin}: ingest.where names column {column!r}, which is not in {data.column_names}"
            )
        data = data.filter(lambda row, c=column, v=value: row[c] == v)
    present = {std: src for std, src in mapping.items() if src in data.column_names}
    for extra in config.keep:
        if extra not in data.column_names:
            raise EmbedforgeError(
                f"ingest: {origin}: ingest.keep names column {extra!r}, which is not in {data.column_names}"
            )
    keep = list(present.values()) + [c for c in config.keep if c not in present.values()]
    data = data.select_columns(keep).rename_columns({src: std for std, src in present.items() if src != std})
    return _relabel(data, config.label_map) if config.label_map else data


def _relabel(data: datasets.Dataset, label_map: dict) -> datasets.Dataset:
    target = "label" if "label" in data.column_names else "score"
    # YAML keys arrive as ints or strings; compare on the string form.
    mapping = {str(k): v for k, v in label_map.items()}
    return data.filter(lambda row: str(row[target]) in mapping).map(lambda row: {target: mapping[str(row[target])]})


def _not_text(value) -> bool:
    """A value that is neither text nor missing: a number, a list, a mapping."""
    if isinstance(value, str):
        return False
    return not pd.api.types.is_scalar(value) or pd.notna(value)


def _check_text(frame: pd.DataFrame, config: IngestConfig, origin: str) -> None:
    """A number or a list where text belongs is a mistake in the data, not an empty row: name column and row."""
    for column in [c for c in frame.columns if c in TEXT_COLUMNS]:
        wrong = frame[column].map(_not_text)
        if wrong.any():
            row = int(wrong.to_numpy().argmax())
            value = frame[column].iloc[row]
            kind = "list" if isinstance(value, (list, tuple, np.ndarray)) else type(value).__name__
            source = config.columns.get(column, column)
            raise EmbedforgeError(
                f"ingest: {origin}, row {row + 1}: column {source!r} holds {kind} values where {column} text belongs; "
                "map a text column to it with ingest.columns"
            )


def _clean(data: datasets.Dataset, config: IngestConfig, origin: str) -> tuple[datasets.Dataset, dict[str, int]]:
    """Strip text, drop empty rows and exact duplicate rows; count what went and why."""
    frame = data.to_pandas()
    _check_text(frame, config, origin)
    text_columns = [c for c in frame.columns if c in TEXT_COLUMNS]
    for column in text_columns:
        frame[column] = frame[column].str.strip()  # a value that is not text becomes null
    usable = frame.notna().all(axis=1) & (frame[text_columns].apply(lambda col: col.str.len() > 0)).all(axis=1)
    cleaned = frame[usable].drop_duplicates(subset=text_columns)
    dropped = {"null_or_empty": int((~usable).sum()), "duplicate": int(usable.sum()) - len(cleaned)}
    return datasets.Dataset.from_pandas(cleaned, preserve_index=False), dropped


def fingerprint(data: datasets.Dataset) -> str:
    """A content hash of the rows, independent of where they came from."""
    return frame_digest(data.to_pandas())


# Cached on the recipe section and this module's code: a retry or resume reads the same rows again.
@task(name="ingest-dataset", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def ingest_dataset(config: IngestConfig, out_dir: str) -> IngestReport:
    """Read the source, keep the standard columns, clean it; return its report, with the parquet file's path."""
    data, origin = datafiles.load(config)
    data = _standardize(data, config, origin)
    data, dropped = _clean(data, config, origin)
    if config.limit:
        data = data.select(range(min(config.limit, len(data))))
    if len(data) < config.min_rows:
        raise EmbedforgeError(
            f"ingest: {origin}: {len(data)} usable rows after cleaning, need at least {config.min_rows} "
            f"(dropped: {dropped})"
        )
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
