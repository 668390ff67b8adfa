"""Split: seeded, group-aware, with an optional separate evaluation source."""

from __future__ import annotations

import pandas as pd
import pytest

from embedforge.config.ingest import IngestConfig
from embedforge.config.split import SplitConfig
from embedforge.errors import EmbedforgeError
from embedforge.tasks.ingest import ingest_dataset
from embedforge.tasks.split import _share_up, split_dataset

from conftest import make_pairs, write_jsonl

MAPPING = {"anchor": "question", "positive": "context"}


# The stage functions themselves (.fn): no Prefect server needed for these.
ingest = ingest_dataset.fn
split = split_dataset.fn


def _ingested(tmp_path, rows, **extra):
    path = str(write_jsonl(tmp_path / "d.jsonl", rows))
    return ingest(IngestConfig(path=path, columns=MAPPING, keep=["topic"], **extra), str(tmp_path / "in"))


def _parts(result):
    entry = next(iter(result.evaluation.values()))
    return {
        "train": pd.read_parquet(result.train),
        "eval": pd.read_parquet(entry.eval),
        "test": pd.read_parquet(entry.test),
    }


def test_no_group_crosses_splits_and_seed_repeats(tmp_path):
    rows = make_pairs(120)
    for i, row in enumerate(rows):  # every passage answers two questions
        row["context"] = rows[i - i % 2]["context"] if i % 2 else row["context"]
    data = _ingested(tmp_path, rows)
    first = _parts(split(SplitConfig(seed=3), data, [], {}, str(tmp_path / "s1")))
    again = _parts(split(SplitConfig(seed=3), data, [], {}, str(tmp_path / "s2")))
    other = _parts(split(SplitConfig(seed=4), data, [], {}, str(tmp_path / "s3")))
    passages = {name: set(frame["positive"]) for name, frame in first.items()}
    assert (
        not passages["train"] & passages["test"]
        and not passages["train"] & passages["eval"]
        and not passages["eval"] & passages["test"]
    )
    assert sum(len(f) for f in first.values()) == 120
    assert first["test"].equals(again["test"])
    assert not first["test"].equals(other["test"])


def test_group_column(tmp_path):
    data = _ingested(tmp_path, make_pairs(120))
    parts = _parts(
        split(SplitConfig(group_by="topic", eval_size=0.2, test_size=0.2), data, [], {}, str(tmp_path / "s"))
    )
    topics = {name: set(frame["topic"]) for name, frame in parts.items()}
    assert topics["train"].isdisjoint(topics["test"]) and topics["train"].isdisjoint(topics["eval"])


def test_separate_eval_source_keeps_all_training_rows(tmp_path):
    train = _ingested(tmp_path, make_pairs(60))
    sts = pd.DataFrame(
        {
            "sentence1": [f"a man plays {i}" for i in range(40)],
            "sentence2": [f"a person plays {i}" for i in range(40)],
            "score": [i / 40 for i in range(40)],
        }
    )
    sts.to_csv(tmp_path / "sts.csv", index=False)
    sts_config = IngestConfig(name="sts-dev", kind="similarity", path=str(tmp_path / "sts.csv"))
    source = ingest(sts_config, str(tmp_path / "in"))
    result = split(
        SplitConfig(eval_size=0.5, test_size=0.5, eval_sources=[sts_config]), train, [source], {}, str(tmp_path / "s")
    )
    assert len(pd.read_parquet(result.train)) == 60
    entry = result.evaluation["sts-dev"]
    assert entry.kind == "similarity"
    assert len(pd.read_parquet(entry.eval)) + len(pd.read_parquet(entry.test)) == 40


def test_group_assignment_is_by_share_and_seed():
    import datasets

    from embedforge.tasks.split import _group_split

    data = datasets.Dataset.from_dict({"doc": [f"d{i % 20}" for i in range(100)], "row": list(range(100))})
    parts = _group_split(data, {"train": 0.6, "eval": 0.2, "test": 0.2}, "doc", seed=1)
    docs = {name: set(part["doc"]) for name, part in parts.items()}
    # 20 documents: 12 / 4 / 4, each document's five rows in one split.
    assert {name: len(d) for name, d in docs.items()} == {"train": 12, "eval": 4, "test": 4}
    assert {name: len(part) for name, part in parts.items()} == {"train": 60, "eval": 20, "test": 20}
    assert (
        _group_split(data, {"train": 0.6, "eval": 0.2, "test": 0.2}, "doc", seed=1)["test"]["row"]
        == parts["test"]["row"]
    )


def test_too_few_groups_and_missing_group_column_are_named():
    import datasets

    from embedforge.tasks.split import _group_split

    data = datasets.Dataset.from_dict({"doc": ["a", "b", "a", "b"], "row": [1, 2, 3, 4]})
    with pytest.raises(EmbedforgeError, match="only 2 distinct 'doc' values"):
        _group_split(data, {"train": 0.8, "test": 0.2}, "doc", seed=1)
    with pytest.raises(
        EmbedforgeError,
        match=r"group column 'module' is not in the data \(\['doc', 'row'\]\); keep it with ingest.keep",
    ):
        _group_split(data, {"train": 0.8, "test": 0.2}, "module", seed=1)


def test_test_file_is_used_whole_and_eval_is_carved_from_training(tmp_path):
    train = _ingested(tmp_path, make_pairs(100))
    config = SplitConfig(test_file=str(write_jsonl(tmp_path / "test.jsonl", make_pairs(30, seed=9))), eval_size=0.2)
    (test_source,) = config.files(IngestConfig(path="x", columns=MAPPING, keep=["topic"])).values()
    test = ingest(test_source, str(tmp_path / "in" / "test"))
    parts = _parts(split(config, train, [], {"test": test}, str(tmp_path / "s")))
    assert len(parts["test"]) == 30 and len(parts["train"]) + len(parts["eval"]) == 100
    assert 10 <= len(parts["eval"]) <= 30  # a fifth of the passages, give or take the group sizes


def test_eval_and_test_files_leave_the_training_data_whole(tmp_path):
    train = _ingested(tmp_path, make_pairs(100))
    own = {
        part: ingest(
            IngestConfig(path=str(write_jsonl(tmp_path / f"{part}.jsonl", make_pairs(n, seed=n))), columns=MAPPING),
            str(tmp_path / "in" / part),
        )
        for part, n in (("test", 30), ("eval", 20))
    }
    config = SplitConfig(test_file="t.jsonl", eval_file="e.jsonl")
    parts = _parts(split(config, train, [], own, str(tmp_path / "s")))
    assert {name: len(part) for name, part in parts.items()} == {"train": 100, "eval": 20, "test": 30}


def test_files_and_eval_sources_are_refused_together():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="test_file/eval_file: give these or eval_sources, not both"):
        SplitConfig(test_file="t.jsonl", eval_sources=[IngestConfig(path="x")])


def test_a_test_file_that_repeats_the_training_data_is_refused_or_reported(tmp_path):
    """Leakage: the gain table would report a gain no user will see."""
    rows = make_pairs(100)
    train = _ingested(tmp_path, rows)
    same = ingest(
        IngestConfig(path=str(write_jsonl(tmp_path / "test.jsonl", rows[:40])), columns=MAPPING), str(tmp_path / "t")
    )
    with pytest.raises(EmbedforgeError) as error:
        split(SplitConfig(test_file="test.jsonl", eval_size=0.0), train, [], {"test": same}, str(tmp_path / "s1"))
    assert str(error.value).startswith(
        "split: 40 of 40 data test pairs (100.0%) share a text with the training split (split.max_overlap = 0.0)"
    )
    # The setting offered accepts what was found: 1 of 1571 is 0.001, not 0.00 (which would refuse it again).
    assert (_share_up(1 / 1571), _share_up(3 / 119), _share_up(0.5)) == ("0.001", "0.026", "0.5")
    allowed = SplitConfig(test_file="test.jsonl", eval_size=0.0, max_overlap=1.0)
    result = split(allowed, train, [], {"test": same}, str(tmp_path / "s2"))
    assert result.evaluation[""].overlap == {"test": "40 of 40"}


def test_groups_too_few_for_every_part_are_named_with_the_shares():
    import datasets

    from embedforge.tasks.split import _group_split

    data = datasets.Dataset.from_dict({"doc": ["a", "b", "c"] * 4, "row": list(range(12))})
    shares = {"train": 0.6, "eval": 0.1, "test": 0.3}
    with pytest.raises(EmbedforgeError, match=r"split: 3 distinct 'doc' values are too few to divide as train 0.60, "):
        _group_split(data, shares, "doc", seed=1)
    assert set(_group_split(data, {"train": 0.7, "test": 0.3}, "doc", seed=1)) == {"train", "test"}


def test_a_split_the_run_carves_never_shares_a_text_across_its_parts(tmp_path):
    """A question asked of two passages, a sentence repeated in two documents: each is one text in two pairs of
    different groups. Carved apart, the leakage check would refuse data the run split itself."""
    rows = make_pairs(120)
    for i in range(0, 60, 3):  # rows i and i + 60 ask the same question of different passages
        rows[i + 60]["question"] = rows[i]["question"]
    for i in range(1, 40, 4):  # and rows i and i + 40 share a passage under different topics
        rows[i + 40]["context"] = rows[i]["context"]
    data = _ingested(tmp_path, rows)
    for seed in range(5):
        result = split(
            SplitConfig(group_by="topic", eval_size=0.2, test_size=0.2, seed=seed),
            data,
            [],
            {},
            str(tmp_path / f"s{seed}"),
        )
        parts = _parts(result)
        for column in ("anchor", "positive"):
            train = set(parts["train"][column])
            assert not train & set(parts["eval"][column]) and not train & set(parts["test"][column])
        assert all(count.startswith("0 of") for count in next(iter(result.evaluation.values())).overlap.values())
        assert (
            sum(len(part) for part in parts.values()) == 120 and "topic, joined by shared texts" not in parts["train"]
        )
