"""The deployment section: how a model's Prefect deployment runs: where, when, and with which labels."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, ValidationError, model_validator

from embedforge.config.section import Section


class ScheduleConfig(Section):
    """When the deployment retrains on its own."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description="Cron expression, e.g. '0 3 * * 1' for Mondays at 03:00, or a shortcut: @daily.")
    timezone: str = Field("UTC", description="IANA timezone the cron expression is read in.")

    @model_validator(mode="after")
    def _prefect_accepts_it(self) -> ScheduleConfig:
        fields = self.cron.split()
        # @daily, @hourly, @weekly ... are croniter's shortcuts, which Prefect accepts; it checks them below.
        if len(fields) != 5 and not self.cron.startswith("@"):
            # Prefect would read a sixth field as seconds: "0 0 4 * * 1" runs at 04:00 on every day of January.
            raise ValueError(
                f"cron: {self.cron!r} has {len(fields)} fields; give five (minute hour day month weekday), "
                "e.g. '0 4 * * 1' for Mondays at 04:00"
            )
        # Prefect's own schedule model: what it refuses at deploy time is refused here, by field.
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=self.cron, timezone=self.timezone)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = error["loc"][0] if error["loc"] else "cron"
            raise ValueError(f"{field}: {error['msg'].removeprefix('Value error, ')}") from None
        return self


class DeploymentConfig(Section):
    """How the model's Prefect deployment runs: where, when, and with which labels."""

    model_config = ConfigDict(extra="forbid")

    work_pool: str = Field("gpu", description="Prefect work pool whose workers run the training.")
    work_queue: str | None = Field(None, description="Work queue within the pool.")
    schedule: ScheduleConfig | None = Field(None, description="Retraining schedule; none: run on demand only.")
    tags: list[str] = Field(default_factory=list, description="Extra deployment tags (the recipe name is always one).")
    job_variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Work pool job variables, e.g. env, image, container_create_kwargs, gpu_limit.",
    )
    concurrency_limit: int = Field(
        1, ge=1, description="Runs of this model at once; one, so two retrains never race for the same repo."
    )
    crash_retries: int = Field(
        3,
        ge=0,
        description="Automatic retries of a run whose worker died (it resumes from its newest checkpoint).",
    )
