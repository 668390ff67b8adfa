"""Measure the champion: the published model's figures on this run's test split, what a new release must match.

Side effect: downloads the published model into ``<run>/champion/`` (unless its figures can stand in)
and writes ``<run>/champion-metrics.json``. Nothing is written to the push target.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from prefect import task

from embedforge import hub
from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.push import PushConfig
from embedforge.evaluators import build_evaluators, measure, run_evaluators, test_split_evaluators
from embedforge.figures import Measurement
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.reranking import headline_leaf, load_reranker, reranked_queries
from embedforge.tasks.release import fetch_release_meta
from embedforge.types import Metrics, Splits, TrainedModel, release_name


@task(name="fetch-published-model")
def fetch_published_model(config: PushConfig, dest: str) -> str | None:
    """Download the currently published model (the champion); None when nothing is published yet."""
    if config.local_dir:
        latest = Path(config.local_dir) / "latest"
        return str(latest.resolve()) if latest.exists() else None
    hub_token, repo_id = hub.token(config), config.full_repo_id
    client = hub.api(config, hub_token)
    try:
        # A repo without a sentence-transformers model in it (just created, or holding something else) has no champion.
        if not client.repo_exists(repo_id):
            return None
        files = client.model_info(repo_id, revision=config.revision).siblings or []
    except HfHubHTTPError as exc:
        if hub.not_found(exc):
            return None  # the branch does not exist yet: first release
        raise
    if not any(f.rfilename == "modules.json" for f in files):
        return None
    return snapshot_download(
        repo_id, revision=config.revision, local_dir=dest, token=hub_token, endpoint=config.endpoint
    )


def _published_figures(config: PushConfig, metrics: Metrics) -> Measurement | None:
    """The release's own figures of what it serves, when it was measured on this same test split with the same
    settings: two-stage when both this run and the release have a reranker kept, the embedder's otherwise."""
    meta = hub.call(config, fetch_release_meta) if metrics.test_key else None
    if not meta or meta.get("test_key") != metrics.test_key:
        return None
    headline, served = metrics.headline, meta.get("rerank") or {}
    two_stage = metrics.rerank and metrics.rerank.kept and served.get("kept")
    if two_stage and served.get("test_key") != metrics.rerank.test_key:
        return None  # its reranker reordered another top_k: measured again
    release = release_name(meta.get("recipe"), meta.get("run_id"))
    run_logger().info("Published release %s was measured on this same test split: compared by its figures", release)
    if two_stage:
        figure, per_query = served["figures"]["fine-tuned reranker"], served["queries"]["fine-tuned reranker"]
        return Measurement(figures={headline: figure}, leaves=[], per_query={headline: per_query})
    # A release published before per-query figures were kept is compared by its figure alone.
    per_query = {headline: meta["per_query"]} if meta.get("per_query") and meta.get("headline") == headline else {}
    return Measurement(figures=meta["metrics"], leaves=[], per_query=per_query)


def _measured(champion_dir: str, evaluate: EvaluateConfig, splits: Splits, model: TrainedModel, metrics: Metrics):
    """The downloaded release measured as this run's model was: with its own reranker over the same top_k when
    both have one, so champion and challenger are compared on what each serves."""
    reranker, rerank = Path(champion_dir) / "reranker", metrics.rerank
    if not (rerank and rerank.kept and reranker.is_dir()):
        evaluators = test_split_evaluators(splits, evaluate)
        return measure(champion_dir, evaluators, max_seq_length=model.max_seq_length).kept(metrics.headline)
    evaluators = build_evaluators(splits, "test", evaluate)
    run_evaluators(load_model(champion_dir, max_seq_length=model.max_seq_length), evaluators)
    leaf, function = headline_leaf(evaluators, metrics.headline)
    queries = reranked_queries(load_reranker(str(reranker)), leaf, function, metrics.headline, rerank.top_k)
    return Measurement(
        figures={metrics.headline: sum(queries) / len(queries)}, leaves=[], per_query={metrics.headline: queries}
    )


@task(name="measure-champion")
def measure_champion(
    config: PushConfig, evaluate: EvaluateConfig, splits: Splits, model: TrainedModel, metrics: Metrics
) -> Measurement | None:
    """The published model's metrics on this run's test split; None when nothing is published (or push is off).

    A release measured alike (its training_meta.json's test_key is this run's) is compared by the figures
    it was published with: downloading and measuring it would give them again. With a reranker kept, what is
    compared is two-stage: the release's embedder and its own reranker (or its embedder alone, if it has none).
    """
    if not config.active:
        return None
    run_dir = Path(model.run_dir)
    champion = _published_figures(config, metrics)
    if champion is None:
        champion_dir = hub.call(config, fetch_published_model, str(run_dir / "champion"))
        if not champion_dir:
            return None
        champion = _measured(champion_dir, evaluate, splits, model, metrics)
    (run_dir / "champion-metrics.json").write_text(json.dumps(champion.figures, indent=2))
    return champion
