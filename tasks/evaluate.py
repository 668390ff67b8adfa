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
    headline_of,
    leaves_of,
    measure,
    test_split_evaluators,
)
from embedforge.figures import Measurement
from embedforge.hashing import files_digest
from embedforge.keyword_search import baseline_figures, baseline_line
from embedforge.logs import run_logger
from embedforge.types import Metrics, Splits, TrainedModel
from embedforge.uncertainty import gain_line, interval, paired, too_small


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
    return f"base-measurement-{hashlib.sha256(identity.encode()).hexdigest()}"


def _measured(config: EvaluateConfig, splits: Splits, ref: str, revision: str | None, max_seq_length: int | None):
    """(the measurement with the headline's per-query figures only, the general sets' keys, the headline, the
    evaluators as they ran)."""
    evaluators = test_split_evaluators(splits, config)
    found = measure(ref, evaluators, revision, max_seq_length)
    general = general_keys(general_evaluators(splits, config), found.leaves)
    headline = headline_of(config, found, general)
    return found.kept(headline), general, headline, evaluators


@task(name="measure-base-model", cache_key_fn=_base_metrics_key, persist_result=True)
def measure_base_model(config: EvaluateConfig, model: TrainedModel, splits: Splits, base_model_id: str) -> Measurement:
    """The base model's test-split metrics, cached: a retrain on the same test split does not measure it again."""
    return _measured(config, splits, model.base_model, model.base_model_revision, model.max_seq_length)[0]


def with_baselines(metrics: Metrics, evaluators: list, language: str) -> Metrics:
    """BM25 and the hybrid on the domain's retrieval data, and the 95 % interval of fine-tuned minus BM25."""
    outside = {key for keys in metrics.general.values() for key in keys}
    leaves = [
        leaf
        for evaluator in evaluators
        for leaf in leaves_of(evaluator)
        if getattr(leaf, "rankings", None) and leaf.primary_metric not in outside
    ]
    if not leaves:
        return metrics
    figures, per_query = baseline_figures(leaves, language)
    over = paired(per_query["bm25"].get(metrics.headline), metrics.queries.get("finetuned"))
    intervals = metrics.intervals | ({"over_bm25": over} if over else {})
    return metrics.model_copy(update={"baselines": figures, "intervals": intervals})


def with_intervals(metrics: Metrics, base: list[float] | None, finetuned: list[float] | None) -> Metrics:
    """The headline's 95 % intervals for each model and for the gain (paired: the same queries, model by model)."""
    found = {"base": interval(base or []), "finetuned": interval(finetuned or []), "gain": paired(base, finetuned)}
    queries = {"base": base, "finetuned": finetuned} if base and finetuned else {}
    return metrics.model_copy(update={"queries": queries, "intervals": {k: v for k, v in found.items() if v}})


def _report(metrics: Metrics) -> None:
    log = run_logger()
    for name, key in [("", metrics.headline)] + [
        (f"general set {g}: ", keys[0]) for g, keys in metrics.general.items()
    ]:
        log.info("%s%s: base %.4f, fine-tuned %.4f", name, key, metrics.base[key], metrics.finetuned[key])
    if gain := metrics.intervals.get("gain"):
        log.info(gain_line(metrics.gain, gain))
    if (bm25 := metrics.baselines.get("bm25", {}).get(metrics.headline)) is not None:
        hybrid, over = metrics.baselines["hybrid"][metrics.headline], metrics.intervals.get("over_bm25")
        line = baseline_line(metrics.finetuned[metrics.headline], bm25, hybrid, over)
        log.info(line[:1].upper() + line[1:])
    if warning := too_small(metrics.intervals):
        log.warning(warning)


@task(name="evaluate-model")
def evaluate_model(
    config: EvaluateConfig, model: TrainedModel, splits: Splits, base: Measurement, out_path: str
) -> Metrics:
    """Measure the fine-tuned model as the base was measured, with intervals over queries; write both to out_path."""
    found, general, headline, evaluators = _measured(config, splits, model.model_dir, None, model.max_seq_length)
    metrics = Metrics(
        headline=headline, base=base.figures, finetuned=found.figures, evaluators=found.leaves, general=general
    )
    metrics = with_intervals(metrics, base.per_query.get(headline), found.per_query.get(headline))
    metrics = with_baselines(metrics, evaluators, config.language or "en")
    metrics.test_key = measurement_key(config, splits, model.max_seq_length)
    _report(metrics)
    Path(out_path).write_text(metrics.model_dump_json(indent=2))
    return metrics
