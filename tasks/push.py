"""Push: publish a release of the model, to the Hugging Face Hub or to a local directory.

The only stage that talks to the network. One Hub commit per release (model folder,
README.md card and training_meta.json), so a failed push leaves the repo as it was. Before it,
the published model (the champion) is measured on this run's test split: a release must earn its place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx
from huggingface_hub import CommitOperationAdd, HfApi, snapshot_download
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import HfHubHTTPError
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.errors import EmbedforgeError
from tasks.evaluate import EvaluateConfig, Metrics, measure, test_split_evaluators
from tasks.logs import run_logger
from tasks.models import TrainedModel
from tasks.record import RunRecord, release_meta
from tasks.split import Splits

META_FILE = "training_meta.json"


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
    retries: int = Field(3, ge=0, description="Retries of a Hub call (connection errors and 5xx only).")
    retry_delay_seconds: float = Field(10.0, ge=0, description="First retry delay; doubles each retry.")

    @model_validator(mode="after")
    def _one_target(self) -> PushConfig:
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


class PushResult(BaseModel):
    """What push hands back: whether the release was published, why, and the two headline figures."""

    pushed: bool = False
    reason: str
    headline: str
    challenger: float
    champion: float | None = None
    target: str | None = None
    location: str | None = None


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


def _hub_error(exc: HfHubHTTPError, repo_id: str, token: str | None) -> EmbedforgeError:
    """A clear, token-free message for a Hub call that failed for good."""
    status = exc.response.status_code if exc.response is not None else None
    if status in (401, 403):
        return EmbedforgeError(
            f"push: token lacks write access to {repo_id} (HTTP {status}); check HF_TOKEN or push.token_secret"
        )
    return EmbedforgeError(
        f"push: the Hub refused the request for {repo_id} (HTTP {status}): "
        f"{_scrub(exc.server_message or str(exc), token)}"
    )


def retry_on_hub_outage(task, task_run, state) -> bool:
    """Prefect retry condition: connection errors and 5xx answers can pass; anything else fails the same again."""
    try:
        state.result()
    except HfHubHTTPError as exc:
        return exc.response is None or exc.response.status_code >= 500
    except httpx.TransportError:
        return True
    except Exception:
        return False
    return False


def _with_hub_retries(hub_task, config: PushConfig):
    """The recipe's retry settings, the one place they are read."""
    delay = exponential_backoff(config.retry_delay_seconds) if config.retries else 0
    return hub_task.with_options(
        retries=config.retries, retry_delay_seconds=delay, retry_condition_fn=retry_on_hub_outage
    )


def _api(config: PushConfig, token: str | None) -> HfApi:
    return HfApi(endpoint=config.endpoint, token=token)


@task(name="fetch-published-model")
def fetch_published_model(config: PushConfig, dest: str) -> str | None:
    """Download the currently published model (the champion); None when nothing is published yet."""
    if config.local_dir:
        latest = Path(config.local_dir) / "latest"
        return str(latest.resolve()) if latest.exists() else None
    token, repo_id = _token(config), config.full_repo_id
    api = _api(config, token)
    try:
        # A repo without a sentence-transformers model in it (just created, or holding something else) has no champion.
        if not api.repo_exists(repo_id):
            return None
        files = api.model_info(repo_id, revision=config.revision).siblings or []
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return None  # the branch does not exist yet: first release
        raise
    if not any(f.rfilename == "modules.json" for f in files):
        return None
    return snapshot_download(repo_id, revision=config.revision, local_dir=dest, token=token, endpoint=config.endpoint)


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


@task(name="upload-release")
def upload_release(config: PushConfig, model_dir: str, meta: dict, release: str) -> str:
    """One Hub commit holding the model folder and training_meta.json, tagged with the release."""
    token, repo_id = _token(config), config.full_repo_id
    api = _api(config, token)
    api.create_repo(repo_id, private=config.private, exist_ok=True)
    if config.revision:
        api.create_branch(repo_id, branch=config.revision, exist_ok=True)
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
    commit = api.create_commit(repo_id, operations, commit_message=message, revision=config.revision)
    if config.tag_releases:
        api.create_tag(repo_id, tag=release, revision=commit.oid, exist_ok=True)
    return commit.commit_url


def _hub(config: PushConfig, hub_task, *args):
    """Run a Hub task with the recipe's retries; a failure that outlasts them becomes one clear line."""
    try:
        return _with_hub_retries(hub_task, config)(config, *args)
    except HfHubHTTPError as exc:
        raise _hub_error(exc, config.full_repo_id, _token(config)) from None
    except httpx.TransportError as exc:
        raise EmbedforgeError(
            f"push: the Hub at {config.endpoint or 'huggingface.co'} cannot be reached "
            f"after {config.retries} retries: {exc}"
        ) from None


def measure_champion(
    config: PushConfig, splits: Splits, evaluate: EvaluateConfig, model: TrainedModel, run_dir: Path
) -> dict[str, float] | None:
    """The published model's metrics on this run's test split; None when nothing is published yet."""
    champion_dir = _hub(config, fetch_published_model, str(run_dir / "champion"))
    if not champion_dir:
        return None
    metrics, _ = measure(champion_dir, test_split_evaluators(splits, evaluate), max_seq_length=model.max_seq_length)
    (run_dir / "champion-metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


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
        problem = writable(Path(config.local_dir))
        return [("push.local_dir", problem)] if problem else []
    try:
        token = _token(config)
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
        _api(config, token).whoami()
    except HfHubHTTPError as exc:
        return [("push.repo_id", _hub_error(exc, config.full_repo_id, token).args[0].removeprefix("push: "))]
    except httpx.TransportError as exc:
        return [("push.endpoint", f"the Hub at {config.endpoint or hub_constants.ENDPOINT} cannot be reached ({exc})")]
    return []


def decide(config: PushConfig, headline: str, challenger: float, champion: float | None) -> tuple[bool, str]:
    """Champion/challenger: publish only when this run is at least as good as what is published."""
    if champion is None:
        return True, "first release"
    if not config.require_improvement:
        return True, f"require_improvement is off ({headline}: {challenger:.4f} vs published {champion:.4f})"
    if challenger >= champion:
        return True, f"{headline} {challenger:.4f} >= published {champion:.4f}"
    return False, f"{headline} {challenger:.4f} < published {champion:.4f}: kept the published model"


def _publish(config: PushConfig, model: TrainedModel, meta: dict, release: str) -> str:
    if config.local_dir:
        return _publish_local(config, Path(model.model_dir), meta, release)
    return _hub(config, upload_release, model.model_dir, meta, release)


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
    champion = measure_champion(config, splits, evaluate, model, Path(record.run_dir))
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
