"""BM25 and the hybrid beside the models: ranked on the same test queries, scored by the library's metric code,
in the gain table and the card, and a gate that asks the fine-tuned model to beat keyword search."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from embedforge import evaluators as built
from embedforge.card_report import gain_markdown
from embedforge.config.evaluate import EvaluateConfig
from embedforge.keyword_search import bm25_rankings, fused
from embedforge.models import load_model
from embedforge.recipe import Recipe
from embedforge.reports import gain_table
from embedforge.tasks.evaluate import with_baselines, with_intervals
from embedforge.tasks.gate import gate_failures
from embedforge.types import EvalSplit, Metrics, Splits

from conftest import make_pairs


def test_bm25_stems_in_the_recipe_language_and_fusion_favours_what_both_rank_high():
    corpus = {"a": "Keepers write their ledgers every evening.", "b": "A harbour shelters the fishing boats."}
    (english,) = bm25_rankings(["who writes a ledger"], corpus, "en", 10)
    assert [hit["corpus_id"] for hit in english] == ["a"]  # ledger ~ ledgers, write ~ write: stemmed alike
    (unstemmed,) = bm25_rankings(["who writes a ledger"], corpus, "xx", 10)  # a language without a stemmer
    assert unstemmed == []  # writes is not write, ledger is not ledgers
    dense = [[{"corpus_id": c, "score": 1 - n / 10} for n, c in enumerate(["b", "c", "x", "y", "a"])]]
    keyword = [[{"corpus_id": "a", "score": 3.0}, {"corpus_id": "c", "score": 2.0}]]
    # c: second in both (2 / 62); a: first and fifth (1 / 61 + 1 / 65); b: first in one (1 / 61).
    assert [hit["corpus_id"] for hit in fused(keyword, dense, top_k=3)[0]] == ["c", "a", "b"]


def _splits(tmp_path: Path) -> Splits:
    pairs = make_pairs(40)
    frame = pd.DataFrame({"anchor": [p["question"] for p in pairs], "positive": [p["context"] for p in pairs]})
    (tmp_path / "docs").mkdir()
    frame.to_parquet(tmp_path / "docs" / "test.parquet")
    frame.iloc[:5].to_parquet(tmp_path / "train.parquet")
    evaluation = {"docs": EvalSplit(kind="retrieval", test=str(tmp_path / "docs" / "test.parquet"))}
    return Splits(
        train=str(tmp_path / "train.parquet"), train_name="docs", train_kind="retrieval", evaluation=evaluation
    )


def test_bm25_finds_chinese_passages_by_character_pairs():
    # Without spaces a Chinese clause was one term: no query shared a term with any passage, and BM25 scored 0.
    corpus = {"keeper": "守门员可以在禁区内用手触球。", "corner": "角球从离球出界点最近的角球区踢出。"}
    assert [hit["corpus_id"] for hit in bm25_rankings(["守门员能用手吗"], corpus, "zh", 10)[0]] == ["keeper"]
    assert [hit["corpus_id"] for hit in bm25_rankings(["角球在哪里踢"], corpus, "zh", 10)[0]] == ["corner"]


def test_the_model_is_measured_beside_bm25_and_the_hybrid_with_an_interval(tiny_model, tmp_path):
    evaluators = built.test_split_evaluators(_splits(tmp_path), EvaluateConfig())
    figures = evaluators[0](load_model(tiny_model))
    headline = "docs_cosine_ndcg@10"
    per_query = evaluators[0].per_query[headline]
    metrics = Metrics(headline=headline, base=figures, finetuned=figures, evaluators=[])
    metrics = with_baselines(with_intervals(metrics, per_query, per_query), evaluators, "en")
    # Each question names its passage's unique key: keyword search finds every one first, the tiny model does not.
    assert metrics.baselines["bm25"][headline] == 1.0 and metrics.baselines["bm25"]["docs_cosine_mrr@10"] == 1.0
    assert metrics.finetuned[headline] < metrics.baselines["hybrid"][headline] <= 1.0
    over = metrics.intervals["over_bm25"]
    assert over.n == 40 and over.low <= figures[headline] - 1.0 <= over.high < 0
    (row,) = [row for row in gain_table(metrics) if row["metric"] == headline]
    assert row["BM25"] == 1.0 and row["hybrid"] == round(metrics.baselines["hybrid"][headline], 4)
    card = gain_markdown(metrics)
    assert "| Metric | Base | Fine-tuned | Δ | Δ 95 % CI | BM25 | hybrid |" in card
    assert "Fine-tuned minus BM25 on the same queries: 95 % CI [" in card
    short = 1.0 - figures[headline]
    assert failures(metrics, over_bm25=0.0) == [
        f"{headline} fine-tuned minus BM25 = {-short:.4f} < 0.0 (short by {short:.4f})"
    ]


def failures(metrics: Metrics, **gates) -> list[str]:
    return gate_failures(EvaluateConfig(gates=gates), metrics)


def test_a_bm25_gate_on_data_without_a_bm25_figure_says_so():
    metrics = Metrics(
        headline="sts_pearson_cosine",
        base={"sts_pearson_cosine": 0.5},
        finetuned={"sts_pearson_cosine": 0.6},
        evaluators=[],
    )
    assert failures(metrics, over_bm25=0.0) == [
        "over_bm25: sts_pearson_cosine has no BM25 figure (retrieval test data only)"
    ]


def test_bm25_stems_in_the_card_language_unless_evaluate_says_otherwise(recipe_dict):
    assert Recipe.model_validate({**recipe_dict, "card": {}}).evaluate.language == "en"
    assert Recipe.model_validate({**recipe_dict, "card": {"language": ["id"]}}).evaluate.language == "id"
    chosen = {**recipe_dict, "card": {"language": ["id"]}, "evaluate": {"language": "en"}}
    assert Recipe.model_validate(chosen).evaluate.language == "en"


def test_a_language_name_instead_of_a_code_is_refused_by_field(recipe_dict):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not an ISO 639-1 code: write a two-letter code such as en"):
        Recipe.model_validate({**recipe_dict, "evaluate": {"language": "english"}})
