"""Hard-negative mining: only training passages, never the positive's own group, and no training pair lost."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from embedforge.config.ingest import IngestConfig
from embedforge.config.mine import MineConfig
from embedforge.config.split import SplitConfig
from embedforge.data_reports import MiningReport
from embedforge.flows.finetune import finetune
from embedforge.mining import mining_warnings
from embedforge.recipe import Recipe
from embedforge.reports import mining_markdown, trials_markdown
from embedforge.tasks.choose import _trials
from embedforge.tasks.ingest import ingest_dataset
from embedforge.tasks.mine import mine_hard_negatives
from embedforge.tasks.split import split_dataset
from embedforge.types import Splits

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


def test_mining_ranks_with_the_prompts_the_model_trains_with(splits, recipe_dict, tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    # A query-prompt model (Qwen3-Embedding) is ranked as it is used: the recipe hands mining its prompts.
    recipe_dict["train"]["args"]["prompts"] = {"anchor": "query: "}
    recipe = Recipe.model_validate({**recipe_dict, "mine": {}})
    assert recipe.mine.prompts == {"anchor": "query: "}
    mined = _mine(splits, tiny_model, tmp_path, prompts=recipe.mine.prompts)
    rows = pd.read_parquet(mined.train)
    model = SentenceTransformer(tiny_model)

    def mean_positive_score(prefix: str) -> float:
        anchors = model.encode([prefix + text for text in rows["anchor"]], normalize_embeddings=True)
        positives = model.encode(list(rows["positive"]), normalize_embeddings=True)
        return float((anchors * positives).sum(axis=1).mean())

    assert mined.mining.positive_score == pytest.approx(mean_positive_score("query: "), abs=1e-4)
    assert mined.mining.positive_score != pytest.approx(mean_positive_score(""), abs=1e-4)


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


def _report(**figures) -> MiningReport:
    return MiningReport(model="m", negatives_per_anchor=1, same_group_skipped=0, settings={}, **figures)


def test_negatives_scoring_close_to_their_positives_are_called_likely_false_ones():
    report = _report(rows=100, mined_rows=100, in_batch_only_rows=0, positive_score=0.80, negative_score=0.78)
    (warning,) = mining_warnings(MineConfig(), report)
    assert "likely false negatives" in warning and "mine.relative_margin: 0.1" in warning
    # Well apart: nothing to say.
    assert mining_warnings(MineConfig(), report.model_copy(update={"negative_score": 0.5})) == []


def _splits_with(path: str, report: MiningReport | None = None) -> Splits:
    return Splits(train=path, mining=report, train_name="t", train_kind="retrieval", evaluation={})


def test_choose_keeps_no_mining_when_mining_lowers_the_eval_figure(tmp_path):
    recipe = Recipe.model_validate(
        {
            "name": "choose",
            "ingest": {"path": str(tmp_path / "d.jsonl")},
            "train": {"base_model": "m"},
            "mine": {"choose": [{"relative_margin": 0.1}, {"num_negatives": 3}]},
        }
    )
    report = _report(rows=10, mined_rows=4, in_batch_only_rows=6)
    plain, margin, three = _splits_with("plain"), _splits_with("margin", report), _splits_with("three", report)
    metric = "eval_cosine_ndcg@10"
    trials = _trials(recipe, [(metric, 0.71, plain, None), (metric, 0.69, margin, None), (metric, 0.70, three, None)])
    assert [t.name for t in trials if t.chosen] == ["no mining"]
    assert [(t.name, t.settings, t.without_negative) for t in trials] == [
        ("no mining", None, None),
        ("choose[0]", {"relative_margin": 0.1}, 6),
        ("choose[1]", {"num_negatives": 3}, 6),
    ]
    # A tie is no gain: the simpler data wins.
    assert [
        t.name
        for t in _trials(recipe, [(metric, 0.7, plain, None), (metric, 0.7, margin, None), (metric, 0.6, three, None)])
        if t.chosen
    ] == ["no mining"]
    # Mining that helps is kept.
    assert [
        t.name
        for t in _trials(recipe, [(metric, 0.7, plain, None), (metric, 0.72, margin, None), (metric, 0.6, three, None)])
        if t.chosen
    ] == ["choose[0]"]


def test_choose_replaces_no_mining_only_beyond_the_noise():
    recipe = Recipe.model_validate(
        {
            "name": "c",
            "ingest": {"path": "d.jsonl"},
            "train": {"base_model": "m"},
            "mine": {"choose": [{"num_negatives": 2}, {"num_negatives": 3}]},
        }
    )
    plain, mined = _splits_with("plain"), _splits_with("mined", _report(rows=10, mined_rows=10, in_batch_only_rows=0))
    rng = np.random.default_rng(0)
    none = list(rng.random(100))
    noisy = [v + d for v, d in zip(none, [0.0514, -0.0486] * 50)]  # 0.0014 better on average, ±0.05 a query
    clear = [v + d for v, d in zip(none, rng.normal(0.03, 0.01, 100))]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    results = [
        ("m", mean(none), plain, none),
        ("m", mean(noisy), mined, noisy),
        ("m", mean(clear) - 0.02, mined, clear),
    ]
    trials = _trials(recipe, results[:2])
    assert trials[1].figure > trials[0].figure and trials[1].versus_none[0] < 0 < trials[1].versus_none[1]
    assert [t.name for t in trials if t.chosen] == ["no mining"]
    assert [t.name for t in _trials(recipe, results) if t.chosen] == ["choose[1]"]
    assert "vs no mining, 95 % CI" in trials_markdown(plain.model_copy(update={"mining_trials": trials}))


def test_a_candidate_that_breaks_the_section_rules_is_named_by_its_place(tmp_path):
    with pytest.raises(ValueError, match=r"choose\[1\]\.range_max: 3 must be above range_min \(5\)"):
        MineConfig(range_min=5, range_max=50, choose=[{"num_negatives": 2}, {"range_max": 3}])
    recipe = {"name": "r", "ingest": {"path": "d.jsonl"}, "train": {"base_model": "m"}, "split": {"eval_size": 0}}
    with pytest.raises(ValueError, match=r"mine.choose: the candidates are compared on the eval split"):
        Recipe.model_validate(recipe | {"mine": {"choose": [{"num_negatives": 2}]}})


def _task_runs_since(client, started: datetime) -> dict[str, list]:
    """{task name: its runs} of the task runs this test made (tests in one process run one at a time)."""
    found: dict[str, list] = {}
    for run in client.read_task_runs(limit=200):
        if run.start_time and run.start_time >= started:
            found.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return found


@pytest.mark.usefixtures("prefect_server")
def test_choose_trains_each_candidate_on_the_eval_split_before_the_test_split_is_read(
    recipe_dict, tmp_path, monkeypatch
):
    import embedforge.tasks.choose as choose

    measured = []  # the parts the short runs were measured on
    build = choose.build_evaluators
    monkeypatch.setattr(choose, "build_evaluators", lambda s, part, c: measured.append(part) or build(s, part, c))
    started = datetime.now(timezone.utc)
    recipe_dict["split"]["group_by"] = "topic"
    # One candidate leaves every pair without a negative (its short run is no mining's), one mines two each.
    recipe_dict["mine"] = {"choose": [{"absolute_margin": 5.0}, {"num_negatives": 2}], "trial_steps": 4}
    result = finetune(recipe=Recipe.model_validate(recipe_dict), output_dir=str(tmp_path / "runs"))
    run_dir = Path(result.run_dir)
    with get_client(sync_client=True) as client:
        key = ArtifactFilter(key=ArtifactFilterKey(any_=["tiny-test-mining"]))
        artifact = max(client.read_artifacts(artifact_filter=key), key=lambda a: a.created)
        runs = _task_runs_since(client, started)
    rows = [line.split("|") for line in artifact.data.splitlines() if line.startswith("| ") and "`" in line]
    figures = {cells[1].strip(" *"): float(cells[4]) for cells in rows}
    assert list(figures) == ["no mining", "choose[0]", "choose[1]"], artifact.data
    assert figures["choose[0]"] == figures["no mining"]  # no negative for any pair: the same short run
    # No mining, unless a candidate is better beyond the noise (its interval versus no mining above 0).
    lows = {cells[1].strip(" *"): cells[5].strip(" []").split(",")[0] for cells in rows}
    better = [name for name, low in lows.items() if low not in ("", "-") and float(low) > 0]
    winner = max(better, key=figures.get) if better else "no mining"
    assert f"Kept: **{winner}**" in " ".join(artifact.data.split())
    assert winner != "choose[0]"  # a tie goes to no mining
    card = (run_dir / "model" / "README.md").read_text()
    assert "### Hard Negatives" in card and f"| **{winner}** |" in card
    assert (run_dir / "data" / "mining-trials" / "2" / "mined" / "train.parquet").exists()
    # Every short run ended before the test split was read (the fine-tuned model's figures, or the base's).
    assert len(runs["try-mining"]) == 3 and measured == ["eval"] * 3
    test_read = min(r.start_time for name in ("measure-base-model", "evaluate-model") for r in runs.get(name, []))
    assert max(r.end_time for r in runs["try-mining"]) <= test_read
    # Once chosen, the eval pairs train too, mined as the winner says (split.refit).
    (fold,) = runs["fold-eval-into-training"]
    assert max(r.end_time for r in runs["try-mining"]) <= fold.start_time
    assert "eval pairs carved out of the training data were trained on too" in card
    assert len(runs.get("mine-hard-negatives", [])) == 2 + (winner != "no mining"), runs.keys()
