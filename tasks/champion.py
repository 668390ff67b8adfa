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
from embedforge.evaluators import measure, test_split_evaluators
from embedforge.figures import Measurement
from embedforge.logs import run_logger
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


def _published_figures(config: PushConfig, headline: str, test_key: str | None) -> Measurement | None:
    """The release's own figures, when it was measured on this same test split with the same settings."""
    meta = hub.call(config, fetch_release_meta) if test_key else None
    if not meta or meta.get("test_key") != test_key:
        return None
    release = release_name(meta.get("recipe"), meta.get("run_id"))
    run_logger().info("Published release %s was measured on this same test split: compared by its figures", release)
    # A release published before per-query figures were kept is compared by its figure alone.
    per_query = {headline: meta["per_query"]} if meta.get("per_query") and meta.get("headline") == headline else {}
    return Measurement(figures=meta["metrics"], leaves=[], per_query=per_query)


@task(name="measure-champion")
def measure_champion(
    config: PushConfig, evaluate: EvaluateConfig, splits: Splits, model: TrainedModel, metrics: Metrics
) -> Measurement | None:
    """The published model's metrics on this run's test split; None when nothing is published (or push is off).

    A release measured alike (its training_meta.json's test_key is this run's) is compared by the figures
    it was published with: downloading and measuring it would give them again.
    """
    if not config.active:
        return None
    run_dir = Path(model.run_dir)
    champion = _published_figures(config, metrics.headline, metrics.test_key)
    if champion is None:
        champion_dir = hub.call(config, fetch_published_model, str(run_dir / "champion"))
        if not champion_dir:
            return None
        evaluators = test_split_evaluators(splits, evaluate)
        champion = measure(champion_dir, evaluators, max_seq_length=model.max_seq_length).kept(metrics.headline)
    (run_dir / "champion-metrics.json").write_text(json.dumps(champion.figures, indent=2))
    return champion
