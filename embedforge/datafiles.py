"""Local data files as ingest reads them: which files a path names, their format, their header, their rows.

A path is a file, a folder (every data file under it) or a glob; JSONL/JSON/CSV/Parquet, the text
formats also compressed. Every failure names the file, and the row where there is one.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import datasets
import pandas as pd

from embedforge.config.ingest import IngestConfig
from embedforge.errors import EmbedforgeError
from embedforge.localfiles import confined_files

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")  # datasets reads these compressed text formats as they are


def resolve_source(config: IngestConfig) -> tuple[str, str]:
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
    files = [str(p) for p in confined_files(location, lambda p: _format(str(p)) is not None, "ingest")]
    if not files:
        raise EmbedforgeError(f"ingest: no data file at {target} (looked for {', '.join(FORMATS)} files)")
    return files


def source_columns(config: IngestConfig) -> list[str] | None:
    """The columns of a local source, from its first file's header or first row only; None for a Hub dataset.

    Raises EmbedforgeError naming the file (and row) when the source is missing or unreadable.
    """
    source_type, location = resolve_source(config)
    if source_type == "dataset":
        return None
    first = _local_files(location)[0]
    try:
        return _header(first)
    except UnicodeDecodeError:
        raise EmbedforgeError(f"ingest: {first}, row 1: not UTF-8 text; save it as UTF-8") from None
    except (ValueError, OSError) as exc:
        raise EmbedforgeError(f"ingest: could not read {first}: {exc}") from None


def _header(first: str) -> list[str]:
    kind = _format(first)
    if kind is None:
        raise EmbedforgeError(
            f"ingest: {first}: not a data format embedforge reads; use .jsonl, .json, .csv or .parquet "
            f"(compressed {'/'.join(COMPRESSED)} too)"
        )
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


def _array_columns(file: str) -> list[str]:
    with _open_text(file) as handle:
        rows = json.loads(handle.read().decode("utf-8"))
    if not rows or not isinstance(rows[0], dict):
        raise EmbedforgeError(f"ingest: {file}: a JSON array of objects is expected, one per row")
    return list(rows[0])


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


def load(config: IngestConfig) -> tuple[datasets.Dataset, str]:
    source_type, location = resolve_source(config)
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
