"""Push: publish a release of the model, to the Hugging Face Hub or to a local directory.

The only stage that talks to the network. One Hub commit per release (model folder,
README.md card and training_meta.json), so a failed push leaves the repo as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import EmbedforgeError

META_FILE = "training_meta.json"
# Retrying these cannot help: the token, the name or the permissions are wrong.
NOT_RETRYABLE = {400, 401, 403, 404, 409, 422}


class PushConfig(BaseModel):
    """Where a release goes and when it may replace the published one."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Publish at all; false keeps the model in the run directory only.")
    repo_id: str | None = Field(None, description="Hub repository ('name' or 'org/name').")
    organization: str | None = Field(None, description="Hub organization, when repo_id has no 'org/'.")
    private: bool = Field(True, description="Create the Hub repository as private.")
    revision: str | None = Field(None, description="Branch to commit to (created if missing); default: the repo's main branch.")
    tag_releases: bool = Field(True, description="Tag every release with its run id.")
    endpoint: str | None = Field(None, description="Hub endpoint for self-hosted hubs (default: HF_ENDPOINT or huggingface.co).")
    token_secret: str | None = Field(None, description="Name of a Prefect Secret block holding the token (default: the HF_TOKEN environment variable).")
    local_dir: str | None = Field(None, description="Publish to this directory instead of the Hub: one subfolder per release and 'latest'.")
    require_improvement: bool = Field(True, description="Publish only when the headline metric is at least the published model's on this run's test split.")
    retries: int = Field(3, ge=0, description="Retries of a failed upload (connection errors and 5xx only).")
    retry_delay_seconds: float = Field(10.0, ge=0, description="First retry delay; doubles each retry.")

    @model_validator(mode="after")
    def _one_target(self) -> "PushConfig":
        if self.repo_id and self.local_dir:
            raise ValueError("give repo_id or local_dir, not both")
        return self

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.repo_id or self.local_dir)

    @property
    def full_repo_id(self) -> str | None:
        if self.repo_id and self.organization and "/" not in self.repo_id:
            return f"{self.organization}/{self.repo_id}"
        return self.repo_id


def _token(config: PushConfig) -> str | None:
    if config.token_secret:
        from prefect.blocks.system import Secret

        try:
            return Secret.load(config.token_secret).get()
        except ValueError as exc:
            raise EmbedforgeError(f"push.token_secret: no Prefect Secret block named {config.token_secret!r}") from exc
    return os.environ.get("HF_TOKEN") or None


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def _hub_error(exc: HfHubHTTPError, repo_id: str, token: str | None) -> Exception:
    """A clear, token-free message for errors that a retry cannot fix; None for the others."""
    status = exc.response.status_code if exc.response is not None else None
    if status in (401, 403):
        return EmbedforgeError(f"push: token lacks write access to {repo_id} (HTTP {status}); check HF_TOKEN or push.token_secret")
    if status in NOT_RETRYABLE:
        return EmbedforgeError(f"push: the Hub refused the request for {repo_id} (HTTP {status}): {_scrub(exc.server_message or str(exc), token)}")
    return RuntimeError(f"push: Hub error for {repo_id}: {_scrub(str(exc), token)}")


def is_retryable(task, task_run, state) -> bool:
    """Prefect retry condition: connection errors and 5xx retry; our own clear errors do not."""
    return not isinstance(getattr(state, "data", None), EmbedforgeError)


def _api(config: PushConfig, token: str | None) -> HfApi:
    return HfApi(endpoint=config.endpoint, token=token)


@task(name="fetch-published-model", retries=2, retry_delay_seconds=10, retry_condition_fn=is_retryable)
def fetch_published_model(config: PushConfig, dest: str) -> str | None:
    """Download the currently published model (the champion); None when nothing is published yet."""
    if config.local_dir:
        latest = Path(config.local_dir) / "latest"
        return str(latest.resolve()) if latest.exists() else None
    token = _token(config)
    repo_id = config.full_repo_id
    api = _api(config, token)
    try:
        # A repo without a sentence-transformers model in it (just created, or holding something else) has no champion.
        if not api.repo_exists(repo_id) or not any(f.rfilename == "modules.json" for f in api.model_info(repo_id, revision=config.revision).siblings or []):
            return None
        return snapshot_download(repo_id, revision=config.revision, local_dir=dest, token=token, endpoint=config.endpoint)
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return None  # the branch does not exist yet: first release
        raise _hub_error(exc, repo_id, token) from None


def _publish_local(config: PushConfig, model_dir: Path, meta: dict, release: str) -> str:
    """Copy the release in under a temporary name and rename it, so a reader never sees half a release."""
    root = Path(config.local_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{release}-", dir=root))
    shutil.copytree(model_dir, staging, dirs_exist_ok=True)
    (staging / META_FILE).write_text(json.dumps(meta, indent=2))
    final = root / release
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    link = root / f".latest-{release}"
    link.symlink_to(release)
    os.replace(link, root / "latest")
    return str(final)


def _publish_hub(config: PushConfig, model_dir: Path, meta: dict, release: str, message: str) -> str:
    token = _token(config)
    repo_id = config.full_repo_id
    api = _api(config, token)
    try:
        api.create_repo(repo_id, private=config.private, exist_ok=True)
        if config.revision:
            api.create_branch(repo_id, branch=config.revision, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=p.relative_to(model_dir).as_posix(), path_or_fileobj=str(p)) for p in sorted(model_dir.rglob("*")) if p.is_file()]
        operations.append(CommitOperationAdd(path_in_repo=META_FILE, path_or_fileobj=json.dumps(meta, indent=2).encode()))
        commit = api.create_commit(repo_id, operations, commit_message=message, revision=config.revision)
        if config.tag_releases:
            api.create_tag(repo_id, tag=release, revision=commit.oid, exist_ok=True)
    except HfHubHTTPError as exc:
        raise _hub_error(exc, repo_id, token) from None
    return commit.commit_url


def decide(config: PushConfig, headline: str, challenger: float, champion: float | None) -> tuple[bool, str]:
    """Champion/challenger: publish only when this run is at least as good as what is published."""
    if champion is None:
        return True, "first release"
    if not config.require_improvement:
        return True, f"require_improvement is off ({headline}: {challenger:.4f} vs published {champion:.4f})"
    if challenger >= champion:
        return True, f"{headline} {challenger:.4f} >= published {champion:.4f}"
    return False, f"{headline} {challenger:.4f} < published {champion:.4f}: kept the published model"


@task(name="push-model", retries=3, retry_delay_seconds=10, retry_condition_fn=is_retryable)
def push_model(config: PushConfig, model_dir: str, meta: dict, release: str, champion_score: float | None = None,
               artifact_key: str | None = None) -> dict:
    """Publish one release in one step, unless the published model is better; return what happened."""
    logger = get_run_logger()
    headline, score = meta["headline"], meta["metrics"][meta["headline"]]
    publish, reason = decide(config, headline, score, champion_score)
    result = {"pushed": publish, "reason": reason, "headline": headline, "challenger": score, "champion": champion_score, "target": config.local_dir or config.full_repo_id}
    if publish:
        message = f"embedforge {meta['recipe']} run {meta['run_id']}: {headline} = {score:.4f}"
        if config.local_dir:
            result["location"] = _publish_local(config, Path(model_dir), meta, release)
        else:
            result["location"] = _publish_hub(config, Path(model_dir), meta, release, message)
        logger.info("Published %s to %s (%s)", release, result["location"], reason)
    else:
        logger.warning("Push skipped: %s. The model stays at %s", reason, model_dir)
    if artifact_key:
        champion = "none" if champion_score is None else f"{champion_score:.4f}"
        create_markdown_artifact(
            f"## {'Published' if publish else 'Not published'}: {release}\n\n| | {headline} |\n|:--|--:|\n| this run | {score:.4f} |\n| published | {champion} |\n\n{reason}\n",
            key=artifact_key, description="Push decision of the latest run",
        )
    return result
