"""The fine-tuning flow, wired as the DAG reads.

ingest -> up to date with the release? -> split -> (mine) -> train -> evaluate -> gate -> card -> push
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from flows.automations import check_crash_retries
from flows.recipe import Recipe
from tasks.card import render_model_card
from tasks.evaluate import check_quality_gate, evaluate_model, measure_base_model
from tasks.ingest import IngestReport, ingest_dataset
from tasks.logs import quiet_libraries, run_logger
from tasks.mine import mine_hard_negatives
from tasks.models import base_model_identity
from tasks.push import PushResult, push_model
from tasks.record import RunRecord
from tasks.release import CurrentRelease, find_current_release
from tasks.split import split_dataset
from tasks.train import train_model


class RunResult(BaseModel):
    """What a run returns (and the CLI prints): where it is, the headline figures, and what push did."""

    run_dir: str
    headline: str
    finetuned: float
    model_dir: str | None = None
    base: float | None = None
    push: PushResult | None = None
    up_to_date: CurrentRelease | None = Field(None, description="The published release this run matched; no training.")


def run_id() -> str:
    """The flow run's scheduled start (UTC) and id: a retry of the same flow run gets the same id back."""
    start = flow_run.scheduled_start_time or datetime.now(timezone.utc)
    return f"{start.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{(flow_run.id or 'local')[:8]}"


def flow_run_name() -> str:
    recipe = flow_run.parameters.get("recipe")
    name = recipe.get("name") if isinstance(recipe, dict) else getattr(recipe, "name", None)
    return f"{name or 'finetune'}-{run_id()[:15]}"


def artifact_key(recipe: Recipe, what: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only; recipe names may hold dots."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{recipe.name}-{what}")


def output_root(output_dir: str | None = None) -> Path:
    """Where run directories go: the argument, else EMBEDFORGE_OUTPUT_DIR (a volume every worker sees), else runs/."""
    return Path(output_dir or os.environ.get("EMBEDFORGE_OUTPUT_DIR") or "runs")


def start_run(recipe: Recipe, output_dir: str | None, resume_dir: str | None) -> Path:
    """<output>/<recipe>/<run-id>/ (or the run being resumed), with the resolved recipe saved first.

    Saved first, so even a failed run says how it was made, and `embedforge resume` can continue it.
    The run id is the flow run's, so a crashed run that is rescheduled finds its own checkpoints.
    """
    quiet_libraries()
    check_crash_retries(recipe.deployment.crash_retries)
    run_dir = Path(resume_dir) if resume_dir else output_root(output_dir) / recipe.name / run_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    run_logger().info("Run directory: %s", run_dir)
    return run_dir


def run_record(recipe: Recipe, run_dir: Path, data: list[IngestReport], files: dict[str, IngestReport]) -> RunRecord:
    return RunRecord(
        recipe=recipe.name,
        recipe_yaml=recipe.to_yaml(),
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
    )


@flow(name="finetune", flow_run_name=flow_run_name)
def finetune(
    recipe: Recipe, output_dir: str | None = None, resume_dir: str | None = None, force: bool = False
) -> RunResult:
    """Fine-tune one embedding model from its recipe and publish it if it earns it.

    A run whose data, recipe and base model are those of the published release trains nothing,
    unless `force` is set.
    """
    run_dir = start_run(recipe, output_dir, resume_dir)
    ingested = str(run_dir / "data" / "ingested")
    data = [ingest_dataset(source, ingested) for source in recipe.sources]
    files = {part: ingest_dataset(source, f"{ingested}/{part}") for part, source in recipe.files.items()}
    record = run_record(recipe, run_dir, data, files)
    current = find_current_release(recipe.push, record, force, artifact_key(recipe, "push"))
    if current:
        return RunResult(run_dir=str(run_dir), headline=current.headline, finetuned=current.value, up_to_date=current)
    splits = split_dataset(recipe.split, data[0], data[1:], files, str(run_dir / "data" / "splits"))
    if recipe.mine:
        mined = str(run_dir / "data" / "mined")
        splits = mine_hard_negatives(recipe.mine, splits, recipe.split.group_by, mined, artifact_key(recipe, "mining"))
    model = train_model(recipe.train, splits, recipe.evaluate, str(run_dir), artifact_key(recipe, "tracking"))
    base = measure_base_model(recipe.evaluate, model, splits, record.base_model_id)
    metrics = evaluate_model(
        recipe.evaluate, model, splits, base, str(run_dir / "metrics.json"), artifact_key(recipe, "gain")
    )
    check_quality_gate(recipe.evaluate, metrics, model.model_dir, recipe.name, record.run_id)
    render_model_card(recipe.card, model, splits, recipe.evaluate, metrics, record, artifact_key(recipe, "model-card"))
    pushed = push_model(recipe.push, model, splits, recipe.evaluate, metrics, record, artifact_key(recipe, "push"))
    return RunResult(
        run_dir=str(run_dir),
        model_dir=model.model_dir,
        headline=metrics.headline,
        base=metrics.base[metrics.headline],
        finetuned=metrics.finetuned[metrics.headline],
        push=pushed,
    )
