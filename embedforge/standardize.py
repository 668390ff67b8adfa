"""What ingest does to a source's rows: the standard columns, the row filter, the label map, and cleaning.

`embedforge validate` reads every local source through the same steps, so a file the run would refuse is
refused before it, naming the file and row.
"""

from __future__ import annotations

import datasets
import numpy as np
import pandas as pd

from embedforge import datafiles
from embedforge.columns import STANDARD_COLUMNS, TEXT_COLUMNS
from embedforge.config.ingest import IngestConfig
from embedforge.errors import EmbedforgeError


def read_source(config: IngestConfig) -> tuple[datasets.Dataset, str, dict[str, int]]:
    """The source's rows in the standard columns, filtered and cleaned; where they came from; what was dropped."""
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
    return data, origin, dropped


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
    data = _where(data, config, origin)
    present = {std: src for std, src in mapping.items() if src in data.column_names}
    for extra in config.keep:
        if extra not in data.column_names:
            raise EmbedforgeError(
                f"ingest: {origin}: ingest.keep names column {extra!r}, which is not in {data.column_names}"
            )
    keep = list(present.values()) + [c for c in config.keep if c not in present.values()]
    data = data.select_columns(keep).rename_columns({src: std for std, src in present.items() if src != std})
    return _relabel(data, config.label_map) if config.label_map else data


def _where(data: datasets.Dataset, config: IngestConfig, origin: str) -> datasets.Dataset:
    """The rows ingest.where keeps; a filter that keeps none is a mistake in the recipe, not an empty dataset."""
    for column, value in config.where.items():
        if column not in data.column_names:
            raise EmbedforgeError(
                f"ingest: {origin}: ingest.where names column {column!r}, which is not in {data.column_names}"
            )
        matched = data.filter(lambda row, c=column, v=value: row[c] == v)
        if len(data) and not len(matched):
            seen = sorted({repr(v) for v in data[column][:1000]})[:5]
            raise EmbedforgeError(
                f"ingest: {origin}: ingest.where {column}: {value!r} matches no row (the column holds {', '.join(seen)}"
                " ...); check the value and its type (0 is not '0')"
            )
        data = matched
    return data


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
