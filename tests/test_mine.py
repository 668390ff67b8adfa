"""Hard-negative mining: only training passages, never the positive's own group, and no training pair lost."""

from __future__ import annotations

import pandas as pd
import pytest
from prefect import flow

from embedforge.config.ingest import IngestConfig
from embedforge.config.mine import MineConfig
from embedforge.config.split import SplitConfig
from embedforge.mining import mining_warnings
from embedforge.reports import mining_markdown
from embedforge.tasks.ingest import ingest_dataset
from embedforge.tasks.mine import mine_hard_negatives
from embedforge.tasks.split import split_dataset
from embedforge.types import MiningReport

from conftest import make_pairs, write_jsonl


@pytest.fixture
def splits(tmp_path):
    path = str(write_jsonl(tmp_path / "d.jsonl", make_pairs(120)))
    config = IngestConfig(path=path, columns={"anchor": "question", "positive": "context"}, keep=["topic"])
    data = ingest_dataset.fn(config, str(tmp_path / "in"))
    return split_dataset.fn(SplitConfig(group_by="topic", test_size=0.25, seed=7), data, [], {}, str(tmp_path / "sp"))


def _mine(splits, tiny_model, tmp_path, **settings):
    return mine_hard_negatives.fn(MineConfig(model=tiny_model, **settings), splits, "topic", str(tmp_path / "mined"))


def test_negatives_come_from_other_groups_of_the_training_split_only(splits, tiny_model, tmp_path):
    mined = _mine(splits, tiny_model, tmp_path, num_negatives=2)
    train = pd.read_parquet(splits.train)
    test_passages = set(pd.read_parquet(next(iter(splits.evaluation.values())).test)["positive"])
    topic_of = dict(zip(train["positive"], train["topic"], strict=True))
    rows = pd.read_parquet(mined.train)
    assert list(rows.columns) == ["anchor", "positive", "negative_1", "negative_2"]
    for row in rows.itertuples():
        for negative in (row.negative_1, row.negative_2):
            assert negative not in test_passages
            assert topic_of[negative] != topic_of[row.positive], (row.positive, negative)
    # The tiny model ranks a topic's own passages first: skipping them is what this test is about.
    assert mined.mining.same_group_skipped > 0


def test_every_training_pair_keeps_training(splits, tiny_model, tmp_path):
    # A margin so strict that most pairs find no eligible negative: they train with in-batch negatives.
    mined = _mine(splits, tiny_model, tmp_path, num_negatives=3, absolute_margin=0.2)
    train = pd.read_parquet(splits.train)
    kept = pd.read_parquet(mined.train)[["anchor", "positive"]]
    if mined.in_batch_only:
        kept = pd.concat([kept, pd.read_parquet(mined.in_batch_only)])
    assert sorted(map(tuple, kept.values)) == sorted(map(tuple, train[["anchor", "positive"]].values))
    report = mined.mining
    assert report.rows == len(train) == report.mined_rows + report.in_batch_only_rows
    assert report.in_batch_only_rows > 0


@pytest.mark.usefixtures("prefect_server")
def test_a_rerun_of_the_same_mining_is_a_cache_hit(splits, tiny_model, tmp_path):
    @flow
    def twice():
        config = MineConfig(model=tiny_model)
        first = mine_hard_negatives(config, splits, "topic", str(tmp_path / "m"), return_state=True)
        second = mine_hard_negatives(config, splits, "topic", str(tmp_path / "m"), return_state=True)
        return first, second

    first, second = twice()
    assert first.name == "Completed" and second.name == "Cached"
    assert second.result() == first.result()


def test_most_pairs_without_a_negative_are_named_with_the_cause_and_the_fix(splits, tiny_model, tmp_path, caplog):
    # No candidate can be 5 below its positive in cosine similarity: every pair is left without a negative.
    mined = _mine(splits, tiny_model, tmp_path, num_negatives=1, absolute_margin=5.0)
    report = mined.mining
    assert report.in_batch_only_rows == report.rows == report.few_candidates_rows
    (warning,) = report.warnings
    assert warning.startswith(f"{report.rows} of {report.rows} training pairs (100%) got no mined negative")
    assert "mine.absolute_margin" in warning and "mine.range_max: 100" in warning
    assert f"Mining: {warning}" in caplog.text
    assert f"> **Warning:** {warning}." in mining_markdown(report)  # the card's and the artifact's words
    assert f"| in-batch negatives only | {report.rows} (100%) |" in mining_markdown(report)


def test_candidates_all_of_the_own_group_say_to_widen_the_window(splits, tiny_model, tmp_path):
    # One group holds every training passage: whatever the library ranks is of the pair's own group.
    train = pd.read_parquet(splits.train).assign(topic="one topic")
    train.to_parquet(tmp_path / "one-group.parquet")
    report = _mine(
        splits.model_copy(update={"train": str(tmp_path / "one-group.parquet")}), tiny_model, tmp_path
    ).mining
    assert report.own_group_rows == report.rows == report.in_batch_only_rows
    assert "their own group (split.group_by)" in report.warnings[0]
    assert "mine.range_max, unset" in report.warnings[0]


def test_negatives_scoring_close_to_their_positives_are_called_likely_false_ones():
    report = MiningReport(
        model="m",
        rows=100,
        mined_rows=100,
        in_batch_only_rows=0,
        negatives_per_anchor=1,
        same_group_skipped=0,
        positive_score=0.80,
        negative_score=0.78,
        settings={},
    )
    (warning,) = mining_warnings(MineConfig(), report)
    assert "likely false negatives" in warning and "mine.relative_margin: 0.05" in warning
    # Well apart: nothing to say.
    assert mining_warnings(MineConfig(), report.model_copy(update={"negative_score": 0.5})) == []
