"""The fine-tuning flow: ingest -> split -> train -> evaluate -> card -> push, wired as the DAG reads."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from flows.recipe import Recipe
from tasks.card import render_model_card
from tasks.evaluate import check_quality_gate, evaluate_model
from tasks.ingest import ingest_dataset
from tasks.push import fetch_published_model, push_model
from tasks.split import split_dataset
from tasks.train import train_model


def _recipe_name() -> str:
    recipe = flow_run.parameters.get("recipe")
    name = recipe.get("name") if isinstance(recipe, dict) else getattr(recipe, "name", None)
    return f"{name or 'finetune'}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def artifact_key(recipe: Recipe, what: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only; recipe names may hold dots."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{recipe.name}-{what}")


def _run_dir(recipe: Recipe, output_dir: str) -> Path:
    """runs/<recipe>/<run-id>/, with the resolved recipe saved first so even a failed run says how it was made.

    The run id comes from the flow run (its scheduled start and id), so a retry of the same flow
    run finds its own directory again and training resumes from the newest checkpoint there.
    """
    start = flow_run.scheduled_start_time or datetime.now(timezone.utc)
    run_id = f"{start.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{(flow_run.id or 'local')[:8]}"
    run_dir = Path(output_dir) / recipe.name / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
    return run_dir


@flow(name="finetune", flow_run_name=_recipe_name)
def finetune(recipe: Recipe, output_dir: str = "runs") -> dict:
    """Fine-tune one embedding model from its recipe and publish it if it earns it."""
    logger = get_run_logger()
    run_dir = _run_dir(recipe, output_dir)
    logger.info("Run directory: %s", run_dir)

    train_data = ingest_dataset(recipe.ingest, str(run_dir / "data" / "ingested"))
    eval_data = [ingest_dataset(source, str(run_dir / "data" / "ingested")) for source in recipe.split.eval_sources]
    splits = split_dataset(recipe.split, train_data, eval_data, str(run_dir / "data" / "splits"))

    model_dir = train_model(recipe.train, splits, recipe.ingest.kind, recipe.evaluate,
                            recipe.card.model_card_kwargs(recipe.ingest, recipe.push.full_repo_id), str(run_dir))
    metrics = evaluate_model(recipe.evaluate, {"base": recipe.train.base_model, "finetuned": model_dir}, splits,
                             str(run_dir / "metrics.json"), recipe.train.max_seq_length, artifact_key=artifact_key(recipe, "gain"))
    check_quality_gate(recipe.evaluate, metrics, model_dir)

    fingerprints = {d["name"] or "data": d["fingerprint"] for d in [train_data, *eval_data]}
    render_model_card(recipe.card, model_dir, str(run_dir), splits, recipe.evaluate, metrics, fingerprints, recipe.to_yaml(),
                      recipe.push.full_repo_id, flow_run.ui_url, artifact_key=artifact_key(recipe, "model-card"))
    result = {"run_dir": str(run_dir), "model_dir": model_dir, "headline": metrics["headline"],
              "base": metrics["base"][metrics["headline"]], "finetuned": metrics["finetuned"][metrics["headline"]]}
    if not recipe.push.active:
        logger.info("Push is disabled for %s: the model is at %s", recipe.name, model_dir)
        return {**result, "push": {"pushed": False, "reason": "push disabled"}}

    champion_dir = fetch_published_model(recipe.push, str(run_dir / "champion"))
    champion_score = None
    if champion_dir:
        champion = evaluate_model(recipe.evaluate, {"champion": champion_dir}, splits, str(run_dir / "champion-metrics.json"), recipe.train.max_seq_length)
        champion_score = champion["champion"][metrics["headline"]]
    meta = {"recipe": recipe.name, "recipe_hash": recipe.fingerprint(), "run_id": run_dir.name, "flow_run_id": str(flow_run.id),
            "base_model": recipe.train.base_model, "base_model_revision": recipe.train.base_model_revision,
            "data_fingerprint": fingerprints, "headline": metrics["headline"], "metrics": metrics["finetuned"]}
    push = push_model.with_options(retries=recipe.push.retries,
                                   retry_delay_seconds=exponential_backoff(recipe.push.retry_delay_seconds) if recipe.push.retries else 0)
    result["push"] = push(recipe.push, model_dir, meta, f"{recipe.name}-{run_dir.name}", champion_score, artifact_key=artifact_key(recipe, "push"))
    return result
