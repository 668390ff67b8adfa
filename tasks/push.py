"""Push: publish the release that decide settled on, to the Hugging Face Hub or to a local directory.

The only stage that writes to the push target. One Hub commit per release (model folder, README.md card
and training_meta.json), so a failed push leaves the repo as it was; a local release appears whole,
by a rename, or not at all. A published release is never written again.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd
from prefect import task

from embedforge import hub
from embedforge.config.push import PushConfig
from embedforge.decisions import ReleaseDecision
from embedforge.errors import EmbedforgeError
from embedforge.logs import run_logger
from embedforge.types import META_FILE, BackendTrial, Metrics, RunRecord, TrainedModel

RERANKER = "reranker/"  # where a release holds its reranker: CrossEncoder(snapshot_download(...) + "/reranker")


def _files(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {prefix + p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _kept_backends(trials: list[BackendTrial], export_dir: str | None, prefix: str = "") -> dict[str, Path]:
    """The files of each backend export kept (an ONNX file with its .bin weights), as the release lays them out."""
    files = {}
    for trial in trials[1:]:
        if trial.kept:
            file = Path(export_dir) / trial.file
            parent = Path(prefix + trial.file).parent
            files.update({(parent / f.name).as_posix(): f for f in sorted(file.parent.glob(f"{file.stem}.*"))})
    return files


def release_files(model: TrainedModel, metrics: Metrics) -> dict[str, Path]:
    """{path in the release: file}: the model folder and the serving backends export kept; with a reranker that
    passed its gate, its folder and backends under reranker/, in the same commit."""
    files = _files(Path(model.model_dir)) | _kept_backends(model.backends, model.export_dir)
    if metrics.rerank and metrics.rerank.kept and model.reranker_dir:
        exported = str(Path(model.export_dir or "") / "reranker")
        files |= _files(Path(model.reranker_dir), RERANKER)
        files |= _kept_backends(model.reranker_backends, exported, RERANKER)
    return files


def _publish_local(config: PushConfig, files: dict[str, Path], meta: dict, release: str) -> str:
    """Copy the release in under a temporary name and rename it, so a reader never sees half a release.

    A published release folder is never written again: the same run published twice is refused by push_model
    before it gets here, and a name taken meanwhile makes the rename fail instead of replacing it.
    """
    root = Path(config.local_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release}-", dir=root))
    try:
        for name, file in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, staging / name)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        os.rename(staging, root / release)  # fails on an existing non-empty folder: never replaces a release
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)  # a half-copied release would keep the disk full
        if exc.errno == errno.ENOSPC:
            raise EmbedforgeError(f"push: the disk of {root} is full ({exc}); nothing was published") from None
        raise
    link = root / f".latest-{release}"
    link.symlink_to(release)
    os.replace(link, root / "latest")
    if config.keep_last:
        _drop_old_releases(root, config.keep_last)
    return str(root / release)


def _drop_old_releases(root: Path, keep: int) -> None:
    """push.keep_last: the newest `keep` releases stay (by publish time), and always the one `latest` names."""
    live = (root / "latest").resolve()
    releases = [p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and not p.is_symlink()]
    releases.sort(key=lambda p: (p / META_FILE).stat().st_mtime if (p / META_FILE).exists() else 0, reverse=True)
    for old in releases[keep:]:
        if old.resolve() != live:
            shutil.rmtree(old)
            run_logger().info("Removed release %s (push.keep_last = %d)", old.name, keep)


@task(name="upload-release")
def upload_release(config: PushConfig, files: dict[str, Path], meta: dict, release: str) -> str:
    """One Hub commit holding the release's files and training_meta.json, tagged with the release."""
    client = hub.api(config, hub.token(config))
    repo_id = config.full_repo_id
    client.create_repo(repo_id, private=config.private, exist_ok=True)
    if config.revision:
        client.create_branch(repo_id, branch=config.revision, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(file)) for name, file in files.items()]
    operations.append(CommitOperationAdd(path_in_repo=META_FILE, path_or_fileobj=json.dumps(meta, indent=2).encode()))
    message = (
        f"embedforge {meta['recipe']} run {meta['run_id']}: {meta['headline']} = "
        f"{meta['metrics'][meta['headline']]:.4f}"
    )
    commit = client.create_commit(repo_id, operations, commit_message=message, revision=config.revision)
    if config.tag_releases:
        client.create_tag(repo_id, tag=release, revision=commit.oid, exist_ok=True)
    return commit.commit_url


def release_meta(record: RunRecord, model: TrainedModel, metrics: Metrics) -> dict:
    """training_meta.json: what a published release says about how it was made."""
    return {
        "recipe": record.recipe,
        "recipe_hash": record.recipe_hash,
        "model_hash": record.model_hash,
        "base_model_id": record.base_model_id,
        "run_id": record.run_id,
        "flow_run_id": record.flow_run_id,
        "base_model": model.base_model,
        "base_model_revision": model.base_model_revision,
        "data_fingerprint": record.fingerprints,
        "headline": metrics.headline,
        "metrics": metrics.finetuned,
        "intervals": {name: found.model_dump() for name, found in metrics.intervals.items()},
        "baselines": metrics.baselines,
        # The headline per test query: a later run measured on the same split compares with it query by query.
        "per_query": metrics.queries.get("finetuned"),
        "test_key": metrics.test_key,
        "general": {
            name: {"metric": key, "base": metrics.base[key], "fine-tuned": metrics.finetuned[key]}
            for name, (key, *_) in metrics.general.items()
        },
        "backends": [t.model_dump() for t in model.backends],
        # The two-stage figures, per query too: a later run with a reranker compares with them query by query.
        "rerank": metrics.rerank.model_dump() if metrics.rerank else None,
        "reranker_backends": [t.model_dump() for t in model.reranker_backends],
    }


def _publish(config: PushConfig, files: dict[str, Path], meta: dict, release: str) -> str:
    if config.local_dir:
        return _publish_local(config, files, meta, release)
    return hub.call(config, upload_release, files, meta, release)


@task(name="push-model")
def push_model(
    config: PushConfig, model: TrainedModel, record: RunRecord, metrics: Metrics, decision: ReleaseDecision
) -> ReleaseDecision:
    """Publish the release when the decision says so, and say where it went; otherwise write nothing."""
    if not decision.publish:
        if not decision.already:
            run_logger().info("Nothing published (%s). The model stays at %s", decision.reason, model.model_dir)
        return decision
    files, meta = release_files(model, metrics), release_meta(record, model, metrics)
    location = _publish(config, files, meta, decision.release)
    run_logger().info("Published %s to %s (%s)", decision.release, location, decision.reason)
    return decision.model_copy(update={"location": location})
