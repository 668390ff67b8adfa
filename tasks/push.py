"""Push: publish a release of the model, to the Hugging Face Hub or to a local directory.

The only stage that talks to the network. One Hub commit per release (model folder,
README.md card and training_meta.json), so a failed push leaves the repo as it was. Before it,
the published model (the champion) is measured on this run's test split: a release must earn its place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError
from prefect import task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks import hub
from tasks.errors import EmbedforgeError
from tasks.evaluate import EvaluateConfig, Metrics
from tasks.logs import run_logger
from tasks.models import TrainedModel
from tasks.record import META_FILE, RunRecord, release_meta
from tasks.release import measure_champion
from tasks.split import Splits


class PushConfig(BaseModel):
    """Where a release goes and when it may replace the published one."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Publish at all; false keeps the model in the run directory only.")
    repo_id: str | None = Field(None, description="Hub repository ('name' or 'org/name').")
    organization: str | None = Field(None, description="Hub organization, when repo_id has no 'org/'.")
    private: bool = Field(True, description="Create the Hub repository as private.")
    revision: str | None = Field(
        None, description="Branch to commit to (created if missing); default: the repo's main branch."
    )
    tag_releases: bool = Field(True, description="Tag every release with its run id.")
    endpoint: str | None = Field(
        None, description="Hub endpoint for self-hosted hubs (default: HF_ENDPOINT or huggingface.co)."
    )
    token_secret: str | None = Field(
        None,
        description="Name of a Prefect Secret block holding the token (default: the HF_TOKEN environment variable).",
    )
    local_dir: str | None = Field(
        None, description="Publish to this directory instead of the Hub: one subfolder per release and 'latest'."
    )
    require_improvement: bool = Field(
        True,
        description="Publish only when the headline metric is at least the published model's on this run's test split.",
    )
    keep_last: int | None = Field(
        None,
        ge=1,
        description="Local target only: keep this many newest releases (the live one always); default: keep every one.",
    )
    retries: int = Field(3, ge=0, description="Retries of a Hub call (connection errors and 5xx only).")
    retry_delay_seconds: float = Field(10.0, ge=0, description="First retry delay; doubles each retry.")

    @model_validator(mode="after")
    def _one_target(self) -> PushConfig:
        if self.repo_id and self.local_dir:
            raise ValueError("give repo_id or local_dir, not both")
        return self

    @model_validator(mode="after")
    def _retention_is_local(self) -> PushConfig:
        if self.keep_last and not self.local_dir:
            raise ValueError(
                "keep_last applies to a local_dir target; Hub releases are commits and tags, never deleted"
            )
        return self

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.repo_id or self.local_dir)

    @property
    def full_repo_id(self) -> str | None:
        if self.repo_id and self.organization and "/" not in self.repo_id:
            return f"{self.organization}/{self.repo_id}"
        return self.repo_id


class PushResult(BaseModel):
    """What push hands back: whether the release was published, why, and the two headline figures."""

    pushed: bool = False
    already: bool = Field(False, description="This run's release was published before (a resume): nothing written.")
    reason: str
    headline: str
    challenger: float
    champion: float | None = None
    target: str | None = None
    location: str | None = None


def _publish_local(config: PushConfig, model_dir: Path, meta: dict, release: str) -> str:
    """Copy the release in under a temporary name and rename it, so a reader never sees half a release.

    A published release folder is never written again: the same run published twice is refused by push_model
    before it gets here, and a name taken meanwhile makes the rename fail instead of replacing it.
    """
    root = Path(config.local_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release}-", dir=root))
    try:
        shutil.copytree(model_dir, staging, dirs_exist_ok=True)
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


@task(name="upload-release")
def upload_release(config: PushConfig, model_dir: str, meta: dict, release: str) -> str:
    """One Hub commit holding the model folder and training_meta.json, tagged with the release."""
    client = hub.api(config, hub.token(config))
    repo_id = config.full_repo_id
    client.create_repo(repo_id, private=config.private, exist_ok=True)
    if config.revision:
        client.create_branch(repo_id, branch=config.revision, exist_ok=True)
    folder = Path(model_dir)
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    operations.append(CommitOperationAdd(path_in_repo=META_FILE, path_or_fileobj=json.dumps(meta, indent=2).encode()))
    message = (
        f"embedforge {meta['recipe']} run {meta['run_id']}: {meta['headline']} = "
        f"{meta['metrics'][meta['headline']]:.4f}"
    )
    commit = client.create_commit(repo_id, operations, commit_message=message, revision=config.revision)
    if config.tag_releases:
        client.create_tag(repo_id, tag=release, revision=commit.oid, exist_ok=True)
    return commit.commit_url


def writable(folder: Path) -> str | None:
    """Why files cannot be written under this folder (created if missing), or None when they can."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        return f"cannot write to {existing} ({exc.strerror})"
    return None


def check_target(config: PushConfig) -> list[tuple[str, str]]:
    """(field, problem) for a target this run could not publish to: checked before any training."""
    if not config.active:
        return []
    if config.local_dir:
        latest = Path(config.local_dir) / "latest"
        if latest.exists() and not latest.is_symlink():
            # The link to the newest release is replaced at publish time; a real folder there cannot be.
            return [("push.local_dir", f"{latest} is a real folder, not the link to the newest release; move it away")]
        problem = writable(Path(config.local_dir))
        return [("push.local_dir", problem)] if problem else []
    try:
        token = hub.token(config)
    except EmbedforgeError as exc:
        return [("push.token_secret", str(exc).removeprefix("push.token_secret: "))]
    if not token:
        return [("push.repo_id", "publishing to the Hub needs a token: set HF_TOKEN or push.token_secret")]
    if hub_constants.HF_HUB_OFFLINE:
        return [
            (
                "push.repo_id",
                "HF_HUB_OFFLINE is set, so nothing can be published to the Hub; unset it, or publish to push.local_dir",
            )
        ]
    try:
        hub.api(config, token).whoami()
    except HfHubHTTPError as exc:
        return [("push.repo_id", hub.hub_error(exc, config.full_repo_id, token).args[0].removeprefix("push: "))]
    except hub.TRANSPORT_ERRORS as exc:
        return [("push.endpoint", f"the Hub at {config.endpoint or hub_constants.ENDPOINT} cannot be reached ({exc})")]
    return []


def decide(config: PushConfig, headline: str, challenger: float, champion: float | None) -> tuple[bool, str]:
    """Champion/challenger: publish only when this run is at least as good as what is published."""
    if champion is None:
        return True, "first release"
    if not config.require_improvement:
        return True, f"require_improvement is off ({headline}: {challenger:.4f} vs published {champion:.4f})"
    if challenger > champion:
        return True, f"{headline} {challenger:.4f} > published {champion:.4f}"
    if challenger == champion:
        # A forced retrain of the same inputs ties: another full copy of the same model would be all it adds.
        return False, f"{headline} {challenger:.4f} equals the published model's: kept the published model"
    return False, f"{headline} {challenger:.4f} < published {champion:.4f}: kept the published model"


def _publish(config: PushConfig, model: TrainedModel, meta: dict, release: str) -> str:
    if config.local_dir:
        return _publish_local(config, Path(model.model_dir), meta, release)
    return hub.call(config, upload_release, model.model_dir, meta, release)


def _push_artifact(result: PushResult, release: str, key: str) -> None:
    champion = "none" if result.champion is None else f"{result.champion:.4f}"
    create_markdown_artifact(
        f"## {'Published' if result.pushed else 'Not published'}: {release}\n\n"
        f"| | {result.headline} |\n|:--|--:|\n| this run | {result.challenger:.4f} |\n| published | {champion} |\n\n"
        f"{result.reason}\n",
        key=key,
        description="Push decision of the latest run",
    )


@task(name="push-model")
def push_model(
    config: PushConfig,
    model: TrainedModel,
    splits: Splits,
    evaluate: EvaluateConfig,
    metrics: Metrics,
    record: RunRecord,
    artifact_key: str | None = None,
) -> PushResult:
    """Publish one release in one step, unless the published model is better; return what happened."""
    result = PushResult(
        reason="push disabled", headline=metrics.headline, challenger=metrics.finetuned[metrics.headline]
    )
    result.target = config.local_dir or config.full_repo_id
    if not config.active:
        run_logger().info("Push is disabled for %s: the model is at %s", record.recipe, model.model_dir)
        return result
    if where := hub.call(config, find_release, record.release):
        result.pushed, result.already, result.location = True, True, where
        result.reason = f"release {record.release} was already published at {where}; a release is never rewritten"
        run_logger().info("Push: %s", result.reason)
        return result
    champion = measure_champion(config, splits, evaluate, model, Path(record.run_dir), metrics.test_key)
    result.champion = None if champion is None else champion[metrics.headline]
    result.pushed, result.reason = decide(config, metrics.headline, result.challenger, result.champion)
    if result.pushed:
        result.location = _publish(config, model, release_meta(record, model, metrics), record.release)
        run_logger().info("Published %s to %s (%s)", record.release, result.location, result.reason)
    else:
        run_logger().warning("Push skipped: %s. The model stays at %s", result.reason, model.model_dir)
    if artifact_key:
        _push_artifact(result, record.release, artifact_key)
    return result
