"""Evaluate the reranker: the test split's headline for the embedder alone, and with the base and the fine-tuned
reranker over the embedder's top_k, query by query, with intervals and the reranker's latency on CPU.

Side effect: writes ``<run>/rerank-metrics.json``; the reranker gate shows the figures in the dashboard.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task

from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.rerank import RerankConfig
from embedforge.evaluators import build_evaluators, run_evaluators
from embedforge.figures import RerankFigures
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.reranking import has_head, headline_leaf, load_reranker, ms_per_query, reranked_queries
from embedforge.types import Metrics, Splits, TrainedModel
from embedforge.uncertainty import interval, paired


def rerank_key(metrics: Metrics, top_k: int) -> str | None:
    """What two-stage figures depend on besides the two models: the test split as measured, and top_k."""
    if not metrics.test_key:
        return None
    return hashlib.sha256(f"{metrics.test_key}|rerank top {top_k}".encode()).hexdigest()


def _two_stage(config: RerankConfig, evaluate: EvaluateConfig, model: TrainedModel, splits: Splits, headline: str):
    """({stage: each test query's headline}, the fine-tuned reranker's ms per query)."""
    evaluators = build_evaluators(splits, "test", evaluate)
    run_evaluators(load_model(model.model_dir, max_seq_length=model.max_seq_length), evaluators)
    leaf, function = headline_leaf(evaluators, headline)
    queries, seed = {"embedder": leaf.per_query[headline]}, config.args.get("seed", 42)
    for name, ref in (("base reranker", config.base_model), ("fine-tuned reranker", model.reranker_dir)):
        revision = config.base_model_revision if ref == config.base_model else None
        reranker = load_reranker(ref, revision, config.max_length, seed)
        queries[name] = reranked_queries(reranker, leaf, function, headline, config.top_k)
    on_cpu = load_reranker(model.reranker_dir, max_length=config.max_length, device="cpu")  # as most serve it
    return queries, ms_per_query(on_cpu, leaf, leaf.rankings[function], config.top_k)


def _log(rerank: RerankFigures) -> None:
    figures, over = rerank.figures, rerank.intervals.get("over_embedder")
    run_logger().info(
        "Two-stage, top %d: %s embedder alone %.4f, + base reranker %.4f, + fine-tuned reranker %.4f (%+.4f%s); "
        "the reranker takes %.1f ms per query on CPU",
        rerank.top_k,
        rerank.metric,
        figures["embedder"],
        figures["base reranker"],
        figures["fine-tuned reranker"],
        figures["fine-tuned reranker"] - figures["embedder"],
        f", {over.signed}" if over else "",
        rerank.ms_per_query,
    )


@task(name="evaluate-reranker")
def evaluate_reranker(
    config: RerankConfig, evaluate: EvaluateConfig, model: TrainedModel, splits: Splits, metrics: Metrics
) -> Metrics:
    """The two-stage figures beside the embedder's on the same test queries; the reranker gate reads them."""
    queries, latency = _two_stage(config, evaluate, model, splits, metrics.headline)
    intervals = {name: found for name, values in queries.items() if (found := interval(values))}
    if over := paired(queries["embedder"], queries["fine-tuned reranker"]):
        intervals["over_embedder"] = over
    rerank = RerankFigures(
        metric=metrics.headline,
        top_k=config.top_k,
        figures={name: sum(values) / len(values) for name, values in queries.items()},
        queries=queries,
        intervals=intervals,
        ms_per_query=latency,
        untrained_head=has_head(config.base_model) is False,
        test_key=rerank_key(metrics, config.top_k),
    )
    _log(rerank)
    (Path(model.run_dir) / "rerank-metrics.json").write_text(rerank.model_dump_json(indent=2))
    return metrics.model_copy(update={"rerank": rerank})
