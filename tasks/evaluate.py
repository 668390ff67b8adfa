"""Evaluate: the recipe's evaluators on the test split, for the base and the fine-tuned model.

Side effect: writes the metrics JSON. The base model's figures are cached: a retrain on the same
test split with the same base model and settings does not measure it again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import task

from embedforge.config.evaluate import EvaluateConfig
from embedforge.evaluators import (
    general_evaluators,
    general_keys,
    measure,
    resolve_metric,
    test_split_evaluators,
)
from embedforge.hashing import files_digest
from embedforge.logs import run_logger
from embedforge.types import Metrics, Splits, TrainedModel


def measurement_key(config: EvaluateConfig, splits: Splits, max_seq_length: int | None) -> str:
    """What a model's test-split figures depend on besides the model: the test data, evaluator settings, max_seq_length.

    Two figures with the same key were measured alike, so one can stand for a new measurement.
    """
    files = [(name, path) for name, (_, path) in splits.parts("test").items()]
    files += [(f"general {name}", path) for name, path in splits.general.items()]
    if config.distractors:
        files.append(("distractors", splits.train))
    settings = config.model_dump(mode="json", exclude={"gates", "headline"})
    return files_digest(files, json.dumps([max_seq_length, settings], sort_keys=True).encode())


def _base_metrics_key(context, parameters) -> str:
    """The base model as it is today, measured alike on the same test split."""
    key = measurement_key(parameters["config"], parameters["splits"], parameters["model"].max_seq_length)
    identity = f"{parameters['base_model_id']}|{key}"
    return f"base-metrics-{hashlib.sha256(identity.encode()).hexdigest()}"


@task(name="measure-base-model", cache_key_fn=_base_metrics_key, persist_result=True)
def measure_base_model(config: EvaluateConfig, model: TrainedModel, splits: Splits, base_model_id: str) -> dict:
    """The base model's test-split metrics, cached: a retrain on the same test split does not measure it again."""
    base, _ = measure(
        model.base_model, test_split_evaluators(splits, config), model.base_model_revision, model.max_seq_length
    )
    return base


@task(name="evaluate-model")
def evaluate_model(
    config: EvaluateConfig, model: TrainedModel, splits: Splits, base: dict[str, float], out_path: str
) -> Metrics:
    """Measure the fine-tuned model as the base was measured; write both to out_path."""
    finetuned, leaves = measure(
        model.model_dir, test_split_evaluators(splits, config), max_seq_length=model.max_seq_length
    )
    general = general_keys(general_evaluators(splits, config), leaves)
    metrics = Metrics(headline="", base=base, finetuned=finetuned, evaluators=leaves, general=general)
    # The headline and gates name the domain's figures; a general set's metric of the same name is not a rival.
    metrics.headline = resolve_metric(config.headline or leaves[0].primary_metric, metrics.domain)
    metrics.test_key = measurement_key(config, splits, model.max_seq_length)
    log = run_logger()
    for name, key in [("", metrics.headline)] + [(f"general set {g}: ", keys[0]) for g, keys in general.items()]:
        log.info("%s%s: base %.4f, fine-tuned %.4f", name, key, base[key], finetuned[key])
    Path(out_path).write_text(metrics.model_dump_json(indent=2))
    return metrics
