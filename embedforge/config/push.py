"""The push section: where a release goes and when it may replace the published one."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from embedforge.config.section import Section


class PushConfig(Section):
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
    approval: Literal["off", "required"] = Field(
        "off",
        description="required: a release that decide would publish waits for a person to approve it in the Prefect "
        "dashboard (a form on the paused flow run); rejected, it is not published.",
    )
    approval_timeout: int = Field(
        86400, ge=1, description="Seconds a release waits for approval; then it is rejected (not published)."
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
