"""Split: seeded, group-aware, with an optional separate evaluation source."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import make_pairs, write_jsonl
from tasks.ingest import IngestConfig, ingest_dataset
from tasks.split import SplitConfig, split_dataset

MAPPING = {"anchor": "question", "positive": "context"}


@pytest.fixture(autouse=True)
def _server(prefect_server):
    yield


def _ingested(tmp_path, rows, **extra):
    return ingest_dataset(IngestConfig(path=str(write_jsonl(tmp_path / "d.jsonl", rows)), columns=MAPPING, keep=["topic"], **extra), str(tmp_path / "in"))


def _parts(result):
    entry = next(iter(result["evaluation"].values()))
    return {"train": pd.read_parquet(result["train"]), "eval": pd.read_parquet(entry["eval"]), "test": pd.read_parquet(entry["test"])}


def test_no_group_crosses_splits_and_seed_repeats(tmp_path):
    rows = make_pairs(120)
    for i, row in enumerate(rows):  # every passage answers two questions
        row["context"] = rows[i - i % 2]["context"] if i % 2 else row["context"]
    data = _ingested(tmp_path, rows)
    first = _parts(split_dataset(SplitConfig(seed=3), data, [], str(tmp_path / "s1")))
    again = _parts(split_dataset(SplitConfig(seed=3), data, [], str(tmp_path / "s2")))
    other = _parts(split_dataset(SplitConfig(seed=4), data, [], str(tmp_path / "s3")))
    passages = {name: set(frame["positive"]) for name, frame in first.items()}
    assert not passages["train"] & passages["test"] and not passages["train"] & passages["eval"] and not passages["eval"] & passages["test"]
    assert sum(len(f) for f in first.values()) == 120
    assert first["test"].equals(again["test"])
    assert not first["test"].equals(other["test"])


def test_group_column(tmp_path):
    data = _ingested(tmp_path, make_pairs(120))
    parts = _parts(split_dataset(SplitConfig(group_by="topic", eval_size=0.2, test_size=0.2), data, [], str(tmp_path / "s")))
    topics = {name: set(frame["topic"]) for name, frame in parts.items()}
    assert topics["train"].isdisjoint(topics["test"]) and topics["train"].isdisjoint(topics["eval"])


def test_separate_eval_source_keeps_all_training_rows(tmp_path):
    train = _ingested(tmp_path, make_pairs(60))
    sts = pd.DataFrame({"sentence1": [f"a man plays {i}" for i in range(40)], "sentence2": [f"a person plays {i}" for i in range(40)], "score": [i / 40 for i in range(40)]})
    sts.to_csv(tmp_path / "sts.csv", index=False)
    sts_config = IngestConfig(name="sts-dev", kind="similarity", path=str(tmp_path / "sts.csv"))
    source = ingest_dataset(sts_config, str(tmp_path / "in"))
    result = split_dataset(SplitConfig(eval_size=0.5, test_size=0.5, eval_sources=[sts_config]), train, [source], str(tmp_path / "s"))
    assert len(pd.read_parquet(result["train"])) == 60
    entry = result["evaluation"]["sts-dev"]
    assert entry["kind"] == "similarity"
    assert len(pd.read_parquet(entry["eval"])) + len(pd.read_parquet(entry["test"])) == 40
