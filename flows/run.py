"""A run of the finetune flow around its stages: its id and directory, what it records, and how it ends.

The flow run ends in a state named for what it decided (Published, Champion kept, Up to date, Rejected,
Trained), so the dashboard's run list answers "what happened to the model" without opening a run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from prefect.runtime import flow_run
from prefect.states import Completed, State
from pydantic import BaseModel, Field

from embedforge.decisions import CurrentRelease, Outcome, ReleaseDecision
from embedforge.figures import Interval, RerankFigures
from embedforge.flows.rundir import check_same_inputs, one_engine
from embedforge.logs import quiet_libraries, redact_logs, run_logger
from embedforge.models import base_model_identity
from embedforge.orchestration.automations import automatic_retries, check_crash_retries, check_heartbeat_rule
from embedforge.recipe import Recipe
from embedforge.redact import redact
from embedforge.tasks.outcome import record_outcome, write_history
from embedforge.types import FilterReport, IngestReport, Metrics, RunRecord, artifact_key


class RunResult(BaseModel):
    """What a run returns (and the CLI prints): where it is, the headline figures, and what push did."""

    run_dir: str
    headline: str
    finetuned: float
    model_dir: str | None = None
    base: float | None = None
    push: ReleaseDecision | None = None
    up_to_date: CurrentRelease | None = Field(None, description="The published release this run matched; no training.")
    outcome: Outcome | None = Field(None, description="What the run decided for the model.")
    synthetic_test: bool = Field(False, description="The test queries were made from documents, not by people.")
    intervals: dict[str, Interval] = Field(default_factory=dict, description="The headline's, as Metrics has them.")
    baselines: dict[str, float] = Field(default_factory=dict, description="{'bm25', 'hybrid': the headline's figure}.")
    rerank: RerankFigures | None = Field(None, description="Two-stage figures, when the recipe has `rerank:`.")

    @classmethod
    def trained(cls, run_dir: Path, model_dir: str, metrics: Metrics, record: RunRecord) -> RunResult:
        base = metrics.base[metrics.headline]
        finetuned = metrics.finetuned[metrics.headline]
        figures = {"headline": metrics.headline, "base": base, "finetuned": finetuned}
        return cls(
            run_dir=str(run_dir),
            model_dir=model_dir,
            synthetic_test=record.synthetic_test,
            intervals=metrics.intervals,
            rerank=metrics.rerank,
            baselines={
                name: found[metrics.headline] for name, found in metrics.baselines.items() if metrics.headline in found
            },
            **figures,
        )


def run_id(start: datetime | None = None, flow_run_id: str | None = None) -> str:
    """The flow run's scheduled start (UTC) and id: a retry of the same flow run gets the same id back."""
    start = start or flow_run.scheduled_start_time or datetime.now(timezone.utc)
    return f"{start.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{(flow_run_id or flow_run.id or 'local')[:8]}"


def _recipe_name(parameters: dict) -> str:
    recipe = parameters.get("recipe")
    return (recipe.get("name") if isinstance(recipe, dict) else getattr(recipe, "name", None)) or "finetune"


def flow_run_name() -> str:
    """The recipe and the run id: unique, so two runs triggered in the same second never share a name."""
    return f"{_recipe_name(flow_run.parameters)}-{run_id()}"


def output_root(output_dir: str | None = None) -> Path:
    """Where run directories go: the argument, else EMBEDFORGE_OUTPUT_DIR (a volume every worker sees), else runs/."""
    return Path(output_dir or os.environ.get("EMBEDFORGE_OUTPUT_DIR") or "runs")


@contextmanager
def start_run(recipe: Recipe, output_dir: str | None, resume_dir: str | None) -> Iterator[Path]:
    """<output>/<recipe>/<run-id>/ (or the run being resumed), held by this engine alone, recipe saved first.

    Saved first, so even a failed run says how it was made, and `embedforge resume` can continue it.
    The run id is the flow run's, so a crashed run that is rescheduled finds its own checkpoints; a second
    engine on the same directory refuses before it writes anything there.
    """
    redact_logs()
    quiet_libraries()
    check_crash_retries(recipe.deployment.crash_retries)
    check_heartbeat_rule()
    run_dir = Path(resume_dir) if resume_dir else output_root(output_dir) / recipe.name / run_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    with one_engine(run_dir):
        check_same_inputs(run_dir, recipe.fingerprint())
        (run_dir / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
        run_logger().info("Run directory: %s", run_dir)
        yield run_dir


def run_record(
    recipe: Recipe, run_dir: Path, data: list[IngestReport], files: dict[str, IngestReport], corpus: FilterReport | None
) -> RunRecord:
    return RunRecord(
        recipe=recipe.name,
        recipe_yaml=recipe.card_yaml(),
        recipe_hash=recipe.fingerprint(),
        model_hash=recipe.model_fingerprint(),
        base_model_id=base_model_identity(recipe.train.base_model, recipe.train.base_model_revision),
        run_id=run_dir.name,
        run_dir=str(run_dir),
        flow_run_id=flow_run.id,
        flow_run_url=flow_run.ui_url,
        repo_id=recipe.push.full_repo_id,
        data=data,
        files=files,
        corpus=corpus,
    )


def finish(record: RunRecord, result: RunResult, outcome: Outcome) -> State:
    """The outcome recorded for the dashboard, and the flow run's final state named after it."""
    result.outcome = record_outcome(outcome, record.artifact_key("history"), record.artifact_key("release"))
    crashes = automatic_retries()
    recovered = f" (recovered after {crashes} crash{'es' * (crashes > 1)})" if crashes else ""
    return Completed(name=outcome.state_name, message=redact(f"{outcome.reason}{recovered}"), data=result)


def outcome(record: RunRecord, decision: str, reason: str, metrics: Metrics | None = None, **figures) -> Outcome:
    """What the run decided, with the headline figures it decided on and the data it was made of."""
    if metrics:  # the figures given win: a decision names what the release serves
        headline = {"headline": metrics.headline, "base": metrics.base[metrics.headline]}
        figures = headline | {"finetuned": metrics.finetuned[metrics.headline]} | figures
    data = ", ".join(fingerprint[:12] for fingerprint in record.fingerprints.values())
    return Outcome(
        recipe=record.recipe, run_id=record.run_id, decision=decision, reason=reason, data_fingerprint=data, **figures
    )


def up_to_date(run_dir: Path, record: RunRecord, current: CurrentRelease) -> tuple[RunResult, Outcome]:
    result = RunResult(run_dir=str(run_dir), headline=current.headline, finetuned=current.value, up_to_date=current)
    reason = f"same data, recipe and base model as release {current.release}: nothing trained"
    figures = {"headline": current.headline, "champion": current.value, "release": current.release}
    return result, outcome(record, "up to date", reason, location=current.location, **figures)


def push_outcome(record: RunRecord, metrics: Metrics, push: ReleaseDecision) -> Outcome:
    release = record.release if push.pushed else None
    served = {"headline": push.headline, "finetuned": push.challenger, "champion": push.champion}
    return outcome(record, push.decision, push.reason, metrics, release=release, location=push.location, **served)


def record_failure(flow, failed_run, state) -> None:
    """A failed run gets its row in the model's history too: an operator sees failures beside releases."""
    name = _recipe_name(failed_run.parameters)
    failed = Outcome(
        recipe=name,
        run_id=run_id(failed_run.expected_start_time, str(failed_run.id)),
        decision="failed",
        reason=(state.message or "failed").splitlines()[0][:300],
    )
    write_history(failed, artifact_key(name, "history"), artifact_key(name, "release"), str(failed_run.id))
