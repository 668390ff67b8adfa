"""The published release: read before training (is it up to date?) and before publishing (the champion).

Side effect: reads from the push target (the Hub repo or the local folder); nothing is written there.
A release's ``training_meta.json`` says what made it: data fingerprints, the model-relevant recipe
and the base model. When this run would be made of the same, it would only reproduce the release.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from prefect import task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from tasks import hub
from tasks.evaluate import EvaluateConfig, measure, test_split_evaluators
from tasks.logs import run_logger
from tasks.models import TrainedModel
from tasks.record import META_FILE, RunRecord, changes, release_name
from tasks.split import Splits

if TYPE_CHECKING:  # push imports this module for the champion
    from tasks.push import PushConfig


class CurrentRelease(BaseModel):
    """The published release a run matches: nothing to train."""

    release: str
    headline: str
    value: float
    location: str


@task(name="fetch-release-meta")
def fetch_release_meta(config: PushConfig) -> dict | None:
    """The published release's training_meta.json (that file alone); None when nothing is published yet."""
    if config.local_dir:
        path = Path(config.local_dir) / "latest" / META_FILE
        return json.loads(path.read_text()) if path.exists() else None
    client = hub.api(config, hub.token(config))
    try:
        path = client.hf_hub_download(config.full_repo_id, META_FILE, revision=config.revision)
    except HfHubHTTPError as exc:
        if hub.not_found(exc):  # no repo, no branch, or a repo without a release in it yet
            return None
        raise
    return json.loads(Path(path).read_text())


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


def _up_to_date(config: PushConfig, meta: dict, release: str, artifact_key: str | None) -> CurrentRelease:
    current = CurrentRelease(
        release=release,
        headline=meta["headline"],
        value=meta["metrics"][meta["headline"]],
        location=config.local_dir or config.full_repo_id,
    )
    run_logger().info(
        "Up to date with release %s (same data, recipe and base model): nothing to train; force=true trains anyway",
        current.release,
    )
    if artifact_key:
        create_markdown_artifact(
            f"## Up to date: {current.release}\n\nThe data fingerprints, the model's recipe sections and the base "
            f"model are those of the published release at {current.location}, so nothing was trained.\n\n"
            f"| | {current.headline} |\n|:--|--:|\n| published | {current.value:.4f} |\n",
            key=artifact_key,
            description="Push decision of the latest run",
        )
    return current


@task(name="check-release")
def find_current_release(
    config: PushConfig, record: RunRecord, force: bool = False, artifact_key: str | None = None
) -> CurrentRelease | None:
    """The published release this run would only reproduce, or None when something that makes the model changed."""
    if not config.active:
        return None
    meta = hub.call(config, fetch_release_meta)
    if meta is None:
        return None
    changed = changes(record, meta)
    release = release_name(meta.get("recipe"), meta.get("run_id"))
    if changed:
        run_logger().info("Changed since release %s: %s", release, "; ".join(changed))
        return None
    if force:
        run_logger().info("Same inputs as release %s, but force is set: training anyway", release)
        return None
    return _up_to_date(config, meta, release, artifact_key)


def measure_champion(
    config: PushConfig,
    splits: Splits,
    evaluate: EvaluateConfig,
    model: TrainedModel,
    run_dir: Path,
    test_key: str | None,
) -> dict[str, float] | None:
    """The published model's metrics on this run's test split; None when nothing is published yet.

    A release measured on the same test split with the same settings (its training_meta.json's test_key)
    is compared by the figures it was published with: downloading and measuring it would give them again.
    """
    meta = hub.call(config, fetch_release_meta) if test_key else None
    if meta and meta.get("test_key") == test_key:
        release = release_name(meta.get("recipe"), meta.get("run_id"))
        run_logger().info("Published release %s was measured on this same test split: compared by its figures", release)
        metrics = meta["metrics"]
    else:
        champion_dir = hub.call(config, fetch_published_model, str(run_dir / "champion"))
        if not champion_dir:
            return None
        evaluators = test_split_evaluators(splits, evaluate)
        metrics, _ = measure(champion_dir, evaluators, max_seq_length=model.max_seq_length)
    (run_dir / "champion-metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
