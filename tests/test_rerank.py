"""A reranker trained beside the embedder: measured over the embedder's top results on the same test queries,
gated, carded and published with it in one release, or left out with the reason; and compared as two-stage
against the release a later run would replace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from huggingface_hub import ModelCard
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from sentence_transformers.cross_encoder import CrossEncoder

from embedforge import evaluators as built
from embedforge.backends.runtime import load_backend
from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.rerank import RerankConfig
from embedforge.figures import Interval, RerankFigures
from embedforge.flows.finetune import finetune
from embedforge.models import load_model
from embedforge.recipe import Recipe
from embedforge.reranking import headline_leaf, rerank_line, reranked_queries
from embedforge.tasks.gate import reranker_failures
from embedforge.types import EvalSplit, Splits

from conftest import make_pairs, make_recipe, write_jsonl

TOP_K = 10


class _Judge:
    """A reranker that knows each query's passage: it scores it `sign`, every other passage 0."""

    def __init__(self, truth: dict[str, str], sign: float):
        self.truth, self.sign = truth, sign

    def predict(self, pairs, **_):
        return np.array([self.sign if self.truth[query] == passage else 0.0 for query, passage in pairs])


def test_a_reranker_reorders_the_embedders_top_k_only(tiny_model, tmp_path):
    pairs = make_pairs(40)
    frame = pd.DataFrame({"anchor": [p["question"] for p in pairs], "positive": [p["context"] for p in pairs]})
    frame.to_parquet(tmp_path / "test.parquet")
    evaluation = {"docs": EvalSplit(kind="retrieval", test=str(tmp_path / "test.parquet"))}
    splits = Splits(train=str(tmp_path / "test.parquet"), train_name="d", train_kind="retrieval", evaluation=evaluation)
    evaluators = built.build_evaluators(splits, "test", EvaluateConfig())
    built.run_evaluators(load_model(tiny_model), evaluators)
    headline = "docs_cosine_ndcg@10"
    leaf, function = headline_leaf(evaluators, headline)
    truth = dict(zip(frame["anchor"], frame["positive"]))
    alone = leaf.per_query[headline]
    perfect = reranked_queries(_Judge(truth, 1.0), leaf, function, headline, TOP_K)
    reversed_ = reranked_queries(_Judge(truth, -1.0), leaf, function, headline, TOP_K)
    found = leaf.keyed(function, leaf.each_query(leaf.rankings[function]))["docs_cosine_recall@10"]
    # A passage in the top 10 goes first; one outside it stays out: the embedder's recall@10 bounds the reranker.
    assert perfect == [1.0 if hit else 0.0 for hit in found]
    assert np.mean(perfect) > np.mean(alone) > np.mean(reversed_)


def _figures(two_stage: float, low: float) -> RerankFigures:
    return RerankFigures(
        metric="docs_cosine_ndcg@10",
        top_k=20,
        figures={"embedder": 0.80, "base reranker": 0.70, "fine-tuned reranker": two_stage},
        queries={},
        intervals={"over_embedder": Interval(low=low, high=two_stage - 0.8 + 0.02, n=100)},
        ms_per_query=12.5,
    )


def test_the_reranker_gate_names_the_figure_it_misses():
    config = RerankConfig(base_model="m", gates={"over_embedder": 0.0, "over_embedder_lower_bound": 0.0})
    assert reranker_failures(config, _figures(0.83, 0.01)) == []
    assert reranker_failures(config, _figures(0.83, -0.01)) == [
        "rerank.gates.over_embedder_lower_bound: docs_cosine_ndcg@10 the low end of two-stage minus embedder "
        "alone's 95 % CI [-0.0100, +0.0500] = -0.0100 < 0.0"
    ]
    (failure,) = reranker_failures(RerankConfig(base_model="m"), _figures(0.78, -0.05))
    assert failure == "rerank.gates.over_embedder: docs_cosine_ndcg@10 two-stage minus embedder alone = -0.0200 < 0.0"
    line = rerank_line(_figures(0.83, 0.01).model_copy(update={"kept": True}))
    assert line == (
        "two-stage, top 20: embedder + fine-tuned reranker 0.8300 (+0.0300, 95 % CI [+0.0100, +0.0500] over the "
        "embedder alone; base reranker 0.7000), 12.5 ms per query on CPU; reranker in the release"
    )


def _rerank_recipe(root: Path, name: str, export: dict | None = None, epochs: int = 3, **rerank) -> Recipe:
    data = write_jsonl(root / "pairs.jsonl", make_pairs())
    section = {"base_model": str(root / "model"), "top_k": TOP_K, "args": {"num_train_epochs": 1}, **rerank}
    recipe = make_recipe(
        name,
        str(root / "model"),
        data,
        split={"eval_size": 0.1, "test_size": 0.25, "seed": 7},
        card={"language": ["en"], "license": "apache-2.0"},
        push={"local_dir": str(root / "published")},
        rerank=section,
        train_args={"num_train_epochs": epochs},
        **({"export": export} if export else {}),
    )
    return Recipe.model_validate(recipe)


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory, _tiny_model_master):
    """A run whose reranker passes its gate (set below anything), then a forced rerun that meets it as champion."""
    root = tmp_path_factory.mktemp("rerank")
    shutil.copytree(_tiny_model_master, root / "model")
    recipe = _rerank_recipe(root, "tiny-rerank", export={"backends": ["onnx"]}, epochs=1, gates={"over_embedder": -1})
    first = finetune(recipe=recipe, output_dir=str(root / "runs"))
    second = finetune(recipe=recipe, output_dir=str(root / "runs"), force=True)
    return first, second, root


@pytest.mark.usefixtures("prefect_server")
def test_a_rerank_recipe_publishes_both_models_in_one_release(kept_run):
    first, _, root = kept_run
    release = Path(first.push.location)
    reranker = CrossEncoder(str(release / "reranker"))
    assert reranker.predict([("what is known about the castle0?", "The castle0 is amber")]).shape == (1,)
    meta = json.loads((release / "training_meta.json").read_text())
    rerank = meta["rerank"]
    assert rerank["kept"] and set(rerank["figures"]) == {"embedder", "base reranker", "fine-tuned reranker"}
    assert len(rerank["queries"]["fine-tuned reranker"]) == 30 and rerank["ms_per_query"] > 0
    assert rerank["intervals"]["over_embedder"]["n"] == 30
    card = ModelCard.load(release / "reranker" / "README.md")
    assert "cross-encoder" in card.data.tags and card.data.license == "apache-2.0"
    assert "## Two-stage Retrieval" in card.text and "embedder + fine-tuned reranker" in card.text
    assert str(root) not in card.content  # nothing of the worker's disk
    assert "### Reranker" in (release / "README.md").read_text()
    assert first.push.headline == f"tiny_validation_cosine_ndcg@10 (two-stage, top {TOP_K})"
    assert first.push.challenger == pytest.approx(rerank["figures"]["fine-tuned reranker"])


@pytest.mark.usefixtures("prefect_server")
def test_the_reranker_ships_its_onnx_backend_measured_as_two_stage(kept_run):
    first, _, _ = kept_run
    release = Path(first.push.location)
    pytorch, onnx = json.loads((release / "training_meta.json").read_text())["reranker_backends"]
    assert onnx["backend"] == "onnx" and onnx["kept"] and onnx["metric"].endswith("(two-stage, top 10)")
    assert onnx["figure"] == pytest.approx(pytorch["figure"], abs=1e-3) and onnx["texts_per_s"] > 0
    served = load_backend(str(release / "reranker"), "onnx", onnx["file"], cross_encoder=True)
    pairs = [("what is known about the castle0?", "The castle0 is amber"), ("a question", "another passage")]
    expected = CrossEncoder(str(release / "reranker")).predict(pairs)
    assert np.allclose(served.predict(pairs), expected, atol=1e-4)
    assert "model = CrossEncoder(" in (release / "README.md").read_text()


@pytest.mark.usefixtures("prefect_server")
def test_a_later_run_is_compared_on_the_two_stage_figure(kept_run):
    first, second, _ = kept_run
    # The same inputs retrained: the champion's two-stage figures stand in (same test split), query by query.
    assert second.push.champion == pytest.approx(first.push.challenger)
    assert second.push.difference is not None and "two-stage" in second.push.headline
    assert second.outcome.decision == "champion kept"


@pytest.mark.usefixtures("prefect_server")
def test_the_dashboard_shows_the_reranker_stages_and_figures(kept_run):
    first, _, _ = kept_run
    flow_run_id = json.loads((Path(first.push.location) / "training_meta.json").read_text())["flow_run_id"]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        tasks = {run.name.rsplit("-", 1)[0] for run in runs}
        assert {"train-reranker", "evaluate-reranker", "check-reranker-gate", "render-reranker-card"} <= tasks
        for key in ("tiny-rerank-rerank", "tiny-rerank-reranker-card"):
            artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            assert str(flow_run_id) in {str(a.flow_run_id) for a in artifacts}, key
        (table,) = [
            a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["tiny-rerank-rerank"]))
            )
            if str(a.flow_run_id) == str(flow_run_id)
        ]
        assert "embedder + fine-tuned reranker" in table.data and table.description.startswith(
            "Reranker in the release"
        )


@pytest.mark.usefixtures("prefect_server")
def test_a_reranker_worse_than_the_embedder_is_left_out_and_the_embedder_published(tmp_path, _tiny_model_master):
    shutil.copytree(_tiny_model_master, tmp_path / "model")
    # The tiny random-init cross-encoder does not learn in one epoch: two-stage falls below the embedder alone.
    result = finetune(recipe=_rerank_recipe(tmp_path, "tiny-rerank-out"), output_dir=str(tmp_path / "runs"))
    release = Path(result.push.location)
    assert result.rerank.two_stage < result.rerank.figures["embedder"] and not result.rerank.kept
    assert result.rerank.reason.startswith("rerank.gates.over_embedder: tiny_validation_cosine_ndcg@10 two-stage")
    assert not (release / "reranker").exists() and (Path(result.run_dir) / "reranker" / "config.json").exists()
    assert "**Left out of the release**: rerank.gates.over_embedder" in (release / "README.md").read_text()
    assert result.push.headline == "tiny_validation_cosine_ndcg@10"  # compared as what it serves: the embedder
