"""Check release: is the published release already what this run would make? Read before anything is split.

Side effect: reads from the push target (the Hub repo or the local folder); nothing is written there.
A release's ``training_meta.json`` says what made it: data fingerprints, the model-relevant recipe
and the base model. When this run would be made of the same, it would only reproduce the release.
"""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError
from prefect import task

from embedforge import hub
from embedforge.artifacts import create_markdown_artifact
from embedforge.config.push import PushConfig
from embedforge.decisions import CurrentRelease
from embedforge.logs import run_logger
from embedforge.types import META_FILE, RunRecord, release_name


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


@task(name="find-release")
def find_release(config: PushConfig, release: str) -> str | None:
    """Where this release already is, when the run that published it runs again (resume); None otherwise."""
    if config.local_dir:
        folder = Path(config.local_dir) / release
        return str(folder) if folder.exists() else None
    try:
        refs = hub.api(config, hub.token(config)).list_repo_refs(config.full_repo_id)
    except HfHubHTTPError as exc:
        if hub.not_found(exc):
            return None
        raise
    return f"{config.full_repo_id}@{release}" if any(tag.name == release for tag in refs.tags) else None


def changes(record: RunRecord, meta: dict) -> list[str]:
    """What makes this run's model differently from the release's training_meta.json; empty when nothing does."""
    found = []
    if meta.get("model_hash") != record.model_hash:
        found.append("the recipe's ingest, split, train or evaluate settings")
    if meta.get("base_model_id") != record.base_model_id:
        found.append(f"the base model ({meta.get('base_model_id')} -> {record.base_model_id})")
    published = meta.get("data_fingerprint") or {}
    for label in sorted(set(published) | set(record.fingerprints)):
        if published.get(label) != record.fingerprints.get(label):
            found.append(f"data {label}")
    return found


def _up_to_date(config: PushConfig, meta: dict, release: str, artifact_key: str) -> CurrentRelease:
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
    create_markdown_artifact(
        f"## Up to date: {current.release}\n\nThe data fingerprints, the model's recipe sections and the base "
        f"model are those of the published release at {current.location}, so nothing was trained.\n\n"
        f"| | {current.headline} |\n|:--|--:|\n| published | {current.value:.4f} |\n",
        key=artifact_key,
        description="Push decision of the latest run",
    )
    return current


@task(name="check-release")
def find_current_release(config: PushConfig, record: RunRecord, force: bool = False) -> CurrentRelease | None:
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
    return _up_to_date(config, meta, release, record.artifact_key("push"))
