"""Ingest: read one data source into the standard columns, cleaned and fingerprinted.

Side effect: writes ``<dir>/<name>.parquet`` and ``<dir>/<name>.json`` (the report).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import INPUTS
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.errors import EmbedforgeError
from tasks.logs import run_logger

Kind = Literal["retrieval", "similarity", "classification"]

# The columns each kind of data has after ingest; the last of the optional ones may be absent.
STANDARD_COLUMNS: dict[str, tuple[list[str], list[str]]] = {
    "retrieval": (["anchor", "positive"], ["negative"]),
    "similarity": (["sentence1", "sentence2", "score"], []),
    "classification": (["sentence1", "sentence2", "label"], []),
}
TEXT_COLUMNS = {"anchor", "positive", "negative", "sentence1", "sentence2"}
FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")  # datasets reads these compressed text formats as they are


class IngestConfig(BaseModel):
    """Where one dataset comes from and how its columns map onto the standard ones."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="Name evaluators and the card use for this data (e.g. dnd_validation, sts-dev).")
    kind: Kind = Field(
        "retrieval",
        description="retrieval: anchor/positive[/negative]; similarity: sentence1/sentence2/score; "
        "classification: sentence1/sentence2/label.",
    )
    path: str | None = Field(
        None,
        description="Local JSONL/CSV/Parquet file, folder or glob "
        "(relative to the working directory, the project root).",
    )
    path_env: str | None = Field(
        None, description="Environment variable holding the path or Hub dataset id when the operator supplies the data."
    )
    dataset: str | None = Field(None, description="Hugging Face Hub dataset id, loaded with datasets.load_dataset.")
    config: str | None = Field(None, description="Hub dataset configuration name.")
    split: str = Field("train", description="Hub dataset split.")
    revision: str | None = Field(None, description="Hub dataset revision (commit, tag or branch).")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Standard column -> source column, for the columns whose names differ."
    )
    where: dict[str, Any] = Field(
        default_factory=dict,
        description="Keep only rows whose column equals this value (e.g. SNLI entailment: {label: 0}).",
    )
    label_map: dict[Any, Any] = Field(
        default_factory=dict,
        description="Rewrite label/score values, e.g. SNLI to binary pairs: {0: 1, 1: 0, 2: 0}; "
        "rows whose value is not in the map are dropped.",
    )
    keep: list[str] = Field(
        default_factory=list, description="Extra source columns to keep, e.g. a group column for split.group_by."
    )
    limit: int | None = Field(None, gt=0, description="Keep at most this many rows (after filtering), for smoke runs.")
    min_rows: int = Field(10, ge=1, description="Fewer rows than this after cleaning is an error.")

    @model_validator(mode="after")
    def _one_source(self) -> IngestConfig:
        if sum(x is not None for x in (self.path, self.path_env, self.dataset)) != 1:
            raise ValueError("give exactly one of path, path_env or dataset")
        if self.label_map and self.kind == "retrieval":
            raise ValueError(
                "label_map: rewrites label or score values; retrieval data has neither "
                "(use kind: similarity or classification)"
            )
        unknown = set(self.columns) - set(sum(STANDARD_COLUMNS[self.kind], []))
        if unknown:
            raise ValueError(
                f"columns: {sorted(unknown)} are not {self.kind} columns {sum(STANDARD_COLUMNS[self.kind], [])}"
            )
        return self

    @field_validator("name")
    @classmethod
    def _a_file_name(cls, name: str) -> str:
        # The name is a file and folder name in the run directory: "../x" would write outside it.
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"{name!r} is also a file name in the run directory; no / or \\, and not . or ..")
        return name

    @property
    def label(self) -> str:
        """What files, folders and fingerprints call this data; an unnamed dataset is "data"."""
        return self.name or "data"


class IngestReport(BaseModel):
    """What ingest hands on: where the cleaned rows are, how many, what was dropped, and their fingerprint."""

    name: str = Field(description="Evaluator prefix: the recipe's ingest.name, possibly empty.")
    label: str = Field(description="File and folder name of this data (the name, or 'data').")
    kind: Kind
    path: str
    source: str
    revision: str | None = Field(None, description="Hub dataset revision, when the data came from the Hub.")
    rows: int
    dropped: dict[str, int]
    fingerprint: str


def _resolve_source(config: IngestConfig) -> tuple[str, str]:
    """Return ("path", location) or ("dataset", id), reading path_env when the operator supplies the data."""
    if config.path_env:
        value = os.environ.get(config.path_env, "").strip()
        if not value:
            raise EmbedforgeError(
                f"ingest: environment variable {config.path_env} is not set. It names this recipe's data: "
                "a local file, folder or glob, or a Hub dataset id "
                "(set it on the worker or in the deployment's job variables)."
            )
        return ("path", value) if glob.glob(os.path.expanduser(value)) else ("dataset", value)
    if config.dataset:
        return "dataset", config.dataset
    return "path", config.path


def _format(file: str) -> str | None:
    """The datasets builder for a file: data.jsonl, data.json, data.csv.gz ...; None for anything else."""
    suffixes = Path(file).suffixes
    if suffixes and suffixes[-1] in COMPRESSED:
        return FORMATS.get(suffixes[-2]) if len(suffixes) > 1 and suffixes[-2] != ".parquet" else None
    return FORMATS.get(suffixes[-1]) if suffixes else None


def _open_text(file: str):
    """A local text file as bytes, decompressed when it is .gz, .bz2, .xz or .zst."""
    import fsspec

    return fsspec.open(file, "rb", compression="infer").open()


def _local_files(location: str) -> list[str]:
    target = Path(location).expanduser()
    if target.is_dir():
        files = sorted(str(p) for p in target.rglob("*") if _format(str(p)))
    else:
        files = sorted(glob.glob(str(target)))
    if not files:
        raise EmbedforgeError(f"ingest: no data file at {target} (looked for {', '.join(FORMATS)} files)")
    return files


def source_columns(config: IngestConfig) -> list[str] | None:
    """The columns of a local source, from its first file's header or first row only; None for a Hub dataset.

    Raises EmbedforgeError naming the file (and row) when the source is missing or unreadable.
    """
    source_type, location = _resolve_source(config)
    if source_type == "dataset":
        return None
    first = _local_files(location)[0]
    kind = _format(first)
    if kind is None:
        raise EmbedforgeError(
            f"ingest: {first}: not a data format embedforge reads; use .jsonl, .json, .csv or .parquet "
            f"(compressed {'/'.join(COMPRESSED)} too)"
        )
    try:
        if kind == "csv":
            return list(pd.read_csv(first, nrows=0).columns)
        if kind == "parquet":
            import pyarrow.parquet

            return pyarrow.parquet.read_schema(first).names
        with _open_text(first) as handle:  # bytes: only the first row is decoded, not a whole buffer
            line = next((line for line in handle if line.strip()), b"{}")
        if line.strip().startswith(b"["):  # a .json file holding one array of objects
            return _array_columns(first)
        return list(json.loads(line.decode("utf-8")))
    except UnicodeDecodeError:
        raise EmbedforgeError(f"ingest: {first}, row 1: not UTF-8 text; save it as UTF-8") from None
    except (ValueError, OSError) as exc:
        raise EmbedforgeError(f"ingest: could not read {first}: {exc}") from None


def _array_columns(file: str) -> list[str]:
    with _open_text(file) as handle:
        rows = json.loads(handle.read().decode("utf-8"))
    if not rows or not isinstance(rows[0], dict):
        raise EmbedforgeError(f"ingest: {file}: a JSON array of objects is expected, one per row")
    return list(rows[0])


def required_columns(config: IngestConfig) -> list[str]:
    """Source columns the recipe names: the mapped standard columns, ingest.where and ingest.keep."""
    required, _ = STANDARD_COLUMNS[config.kind]
    return [config.columns.get(c, c) for c in required] + [c for c in [*config.where, *config.keep]]


def _check_utf8(file: str) -> None:
    """A text file that is not UTF-8 would be read as garbled text without an error: name the row instead."""
    if _format(file) not in ("json", "csv"):
        return
    with _open_text(file) as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise EmbedforgeError(f"ingest: {file}, row {number}: not UTF-8 text; save the file as UTF-8") from None


def _load(config: IngestConfig) -> tuple[datasets.Dataset, str]:
    source_type, location = _resolve_source(config)
    if source_type == "dataset":
        try:
            data = datasets.load_dataset(location, config.config, split=config.split, revision=config.revision)
        except Exception as exc:
            raise EmbedforgeError(
                f"ingest: could not load Hub dataset {location!r} (split {config.split!r}): {exc}"
            ) from exc
        return data, f"{location}@{config.revision or 'main'}"
    files = _local_files(location)
    formats = {_format(f) for f in files}
    if None in formats or len(formats) > 1:
        raise EmbedforgeError(f"ingest: {location} mixes or holds unknown formats; use one of {', '.join(FORMATS)}")
    for file in files:
        _check_utf8(file)
    try:
        data = datasets.load_dataset(formats.pop(), data_files=files, split="train")
    except Exception as exc:
        for file in files:
            _raise_on_bad_row(file)
        raise EmbedforgeError(f"ingest: could not read {', '.join(files)}: {exc}") from None
    return data, ", ".join(files)


def _raise_on_bad_row(file: str) -> None:
    """After datasets failed on a JSONL file: find and name the row, which its own error does not.

    Runs only on failure, so a good file is read once.
    """
    if not file.endswith(".jsonl"):
        return
    with open(file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EmbedforgeError(f"ingest: {file}, row {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise EmbedforgeError(f"ingest: {file}, row {number}: expected a JSON object, got {type(row).__name__}")


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
    return hashlib.sha256(pd.util.hash_pandas_object(data.to_pandas(), index=False).values.tobytes()).hexdigest()[:16]


@task(name="ingest-dataset", cache_policy=INPUTS, persist_result=True)
def ingest_dataset(config: IngestConfig, out_dir: str) -> IngestReport:
    """Read the source, keep the standard columns, clean it; return its report, with the parquet file's path."""
    data, origin = _load(config)
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
