"""Ingest: local files of every format, column mapping, cleaning, fingerprints, and clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from embedforge.config.ingest import IngestConfig
from embedforge.errors import EmbedforgeError
from embedforge.tasks.ingest import ingest_dataset

from conftest import make_pairs, write_jsonl

MAPPING = {"anchor": "question", "positive": "context"}


def ingest(tmp_path, **config):
    # The stage function itself (.fn): no Prefect server needed for these.
    return ingest_dataset.fn(IngestConfig(**config), str(tmp_path / "out"))


def test_jsonl_csv_parquet_folder_and_glob_give_the_same_rows(tmp_path):
    rows = make_pairs(30)
    write_jsonl(tmp_path / "a" / "pairs.jsonl", rows)
    pd.DataFrame(rows).to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "c.parquet")
    write_jsonl(tmp_path / "parts" / "one.jsonl", rows[:15])
    write_jsonl(tmp_path / "parts" / "two.jsonl", rows[15:])
    reports = [
        ingest(tmp_path, path=str(tmp_path / "a" / "pairs.jsonl"), columns=MAPPING),
        ingest(tmp_path, path=str(tmp_path / "b.csv"), columns=MAPPING),
        ingest(tmp_path, path=str(tmp_path / "c.parquet"), columns=MAPPING),
        ingest(tmp_path, path=str(tmp_path / "parts"), columns=MAPPING),
        ingest(tmp_path, path=str(tmp_path / "parts" / "*.jsonl"), columns=MAPPING),
    ]
    assert {r.rows for r in reports} == {30}
    assert len({r.fingerprint for r in reports}) == 1
    assert pd.read_parquet(reports[0].path).columns.tolist() == ["anchor", "positive"]


def test_cleaning_strips_and_counts_empty_and_duplicate_rows(tmp_path):
    rows = make_pairs(20)
    rows[0]["question"] = "  padded question  "
    dirty = rows + [
        {"question": "", "context": "x"},
        {"question": None, "context": "y"},
        {"question": "   ", "context": "z"},
        dict(rows[3]),
        dict(rows[4]),
    ]
    report = ingest(tmp_path, path=str(write_jsonl(tmp_path / "d.jsonl", dirty)), columns=MAPPING)
    assert report.rows == 20
    assert report.dropped == {"null_or_empty": 3, "duplicate": 2}
    assert pd.read_parquet(report.path)["anchor"].iloc[0] == "padded question"


def test_filter_keep_and_limit(tmp_path):
    rows = make_pairs(48)
    report = ingest(
        tmp_path,
        path=str(write_jsonl(tmp_path / "d.jsonl", rows)),
        columns=MAPPING,
        where={"topic": "castle"},
        keep=["topic"],
        min_rows=2,
    )
    frame = pd.read_parquet(report.path)
    assert set(frame["topic"]) == {"castle"} and len(frame) == 4
    assert ingest(tmp_path, path=str(tmp_path / "d.jsonl"), columns=MAPPING, limit=12).rows == 12


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(EmbedforgeError, match=f"ingest: no data file at {tmp_path}/absent.jsonl"):
        ingest(tmp_path, path=str(tmp_path / "absent.jsonl"))


def test_missing_column_names_file_and_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_pairs(20))
    with pytest.raises(
        EmbedforgeError,
        match=r"d\.jsonl: missing column anchor \(from 'query'\); it has \['question', 'context', 'topic'\]",
    ):
        ingest(tmp_path, path=str(path), columns={"anchor": "query", "positive": "context"})


def test_unreadable_row_names_file_and_row(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_pairs(20))
    with open(path, "a") as handle:
        handle.write('{"question": "broken", "context": \n')
    with pytest.raises(EmbedforgeError, match=r"d\.jsonl, row 21: not valid JSON"):
        ingest(tmp_path, path=str(path), columns=MAPPING)


def test_too_few_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", make_pairs(5))
    with pytest.raises(EmbedforgeError, match="5 usable rows after cleaning, need at least 10"):
        ingest(tmp_path, path=str(path), columns=MAPPING)


def test_operator_supplied_location_from_environment(tmp_path, monkeypatch):
    with pytest.raises(EmbedforgeError, match="environment variable MY_DATA is not set"):
        ingest(tmp_path, path_env="MY_DATA", columns=MAPPING)
    monkeypatch.setenv("MY_DATA", str(write_jsonl(tmp_path / "d.jsonl", make_pairs(12))))
    assert ingest(tmp_path, path_env="MY_DATA", columns=MAPPING).rows == 12


def test_report_is_written_beside_the_data(tmp_path):
    report = ingest(tmp_path, name="docs", path=str(write_jsonl(tmp_path / "d.jsonl", make_pairs(12))), columns=MAPPING)
    assert json.loads((tmp_path / "out" / "docs.json").read_text()) == report.model_dump()


def test_unreadable_parquet_names_the_file(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(EmbedforgeError, match=rf"ingest: could not read {broken}"):
        ingest(tmp_path, path=str(broken), columns=MAPPING)


def test_a_json_array_and_a_gzipped_jsonl_read_like_the_jsonl(tmp_path):
    import gzip

    from embedforge.datafiles import source_columns

    rows = make_pairs(30)
    (tmp_path / "array.json").write_text(json.dumps(rows), encoding="utf-8")
    with gzip.open(tmp_path / "pairs.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    plain = ingest(tmp_path, path=str(write_jsonl(tmp_path / "pairs.jsonl", rows)), columns=MAPPING)
    for name in ("array.json", "pairs.jsonl.gz"):
        config = IngestConfig(path=str(tmp_path / name), columns=MAPPING)
        assert source_columns(config) == ["question", "context", "topic"], name  # what validate checks
        assert ingest(tmp_path, path=str(tmp_path / name), columns=MAPPING).fingerprint == plain.fingerprint, name


@pytest.mark.parametrize(("value", "kind"), [(7, "int64"), (["a", "list"], "list")], ids=["ints", "lists"])
def test_a_parquet_column_that_is_not_text_is_named_with_its_row(tmp_path, value, kind):
    frame = pd.DataFrame(make_pairs(20))
    frame["context"] = [value] * len(frame)  # an id or tag column mapped by mistake
    frame.to_parquet(tmp_path / "pairs.parquet")
    with pytest.raises(EmbedforgeError) as error:
        ingest(tmp_path, path=str(tmp_path / "pairs.parquet"), columns=MAPPING)
    assert str(error.value) == (
        f"ingest: {tmp_path / 'pairs.parquet'}, row 1: column 'context' holds {kind} values where positive text "
        "belongs; map a text column to it with ingest.columns"
    )
