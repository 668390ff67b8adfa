"""Merge: the fine-tuned model merged with its base at a few weights (LM-Cocktail), one kept.

Each weight is measured on the eval split and the general sets; the test split is read afterwards,
once, by evaluate, for the merge kept. A merge replaces the model as trained (weight 1) only when its eval figure
is higher beyond the noise (the difference's 95 % interval over the eval queries lies above 0), as `mine.choose`
weighs its candidates. The base's general figures are those measure-base-model took, so
the base is not encoded again here. Merging is sentence-transformers' own (mergekit underneath).

Side effect: the merge kept is written to ``<run>/merged/model`` (the fine-tuned model stays where training
put it), and the ``<recipe>-merge`` artifact lists every weight tried.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import task

from embedforge.artifacts import create_markdown_artifact
from embedforge.evaluators import build_evaluators, choice_figure, general_evaluators, run_evaluators
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.recipe import Recipe
from embedforge.reports import merge_markdown
from embedforge.training.adapters import with_full_weights
from embedforge.types import MergeTrial, Splits, TrainedModel
from embedforge.uncertainty import better_beyond_noise, paired


def _general_drops(model, general: dict[str, list], base: dict[str, float]) -> dict[str, float]:
    """{general set: the base's primary metric minus this model's}; the base's figure is its test measurement."""
    drops = {}
    for name, evaluators in general.items():
        found, leaves = run_evaluators(model, evaluators)
        drops[name] = base[leaves[0].primary_metric] - found[leaves[0].primary_metric]
    return drops


def _full_weights(model: TrainedModel, out: Path):
    """The fine-tuned model with full weights: a LoRA adapter is merged into its base weights first (in a copy)."""
    return load_model(with_full_weights(model.model_dir, out / "full-weights"), max_seq_length=model.max_seq_length)


def _within(trial: MergeTrial, max_drop: float | None) -> bool:
    return max_drop is None or max(trial.general_drop.values(), default=0.0) <= max_drop


def _rank(trial: MergeTrial, max_drop: float | None) -> tuple:
    """Within the general bound, the best eval figure; outside it, the smallest worst drop."""
    within = _within(trial, max_drop)
    return (within, trial.figure if within else -max(trial.general_drop.values(), default=0.0))


def _may_replace(trial: MergeTrial, unmerged: MergeTrial | None, max_drop: float | None) -> bool:
    """A merge replaces the model as trained, both within the general bound, only when better beyond the noise.

    Without per-query figures (a non-retrieval eval split) the higher figure may, as it did before intervals.
    """
    if unmerged is None or trial is unmerged or not (_within(trial, max_drop) and _within(unmerged, max_drop)):
        return True
    return better_beyond_noise(trial.versus_unmerged and trial.versus_unmerged[0], trial.figure, unmerged.figure)


def _merged(recipe: Recipe, finetuned, base, weight: float):
    if weight == 1.0:
        return finetuned
    from sentence_transformers import SentenceTransformer

    # SLERP's t runs from the first model (0) to the second (1): the base's share.
    parameters = {"weight": [weight, 1 - weight]} if recipe.merge.method == "linear" else {"t": 1 - weight}
    return SentenceTransformer.merge([finetuned, base], recipe.merge.method, parameters=parameters)


def _measure(candidate, weight: float, evaluators: tuple[list, dict], base: dict, headline: str | None):
    """One weight's eval figure and its general sets' drops from the base, and its figure per eval query."""
    domain, general = evaluators
    metric, figure, per_query = choice_figure(candidate, domain, headline)
    drops = _general_drops(candidate, general, base)
    return MergeTrial(weight=weight, metric=metric, figure=figure, general_drop=drops), per_query


def _try_weights(recipe: Recipe, models: tuple, evaluators: tuple[list, dict], base_metrics: dict) -> tuple:
    """Every weight measured, in the recipe's order, and (the trial, the model) kept."""
    finetuned, base = models
    bound = recipe.evaluate.max_general_drop
    # The model as trained first: every merge is compared with it, query by query.
    weights = sorted(recipe.merge.weights, key=lambda weight: weight != 1.0)
    trials, best, unmerged = [], None, None
    for weight in weights:
        candidate = _merged(recipe, finetuned, base, weight)
        trial, per_query = _measure(candidate, weight, evaluators, base_metrics, recipe.evaluate.headline)
        if weight == 1.0:
            unmerged = (trial, per_query)
        elif unmerged and (difference := paired(unmerged[1], per_query)):
            trial.versus_unmerged = [difference.low, difference.high]
        trials.append(trial)
        eligible = _may_replace(trial, unmerged and unmerged[0], bound)
        if best is None or eligible and _rank(trial, bound) > _rank(best[0], bound):
            best = (trial, candidate)  # only the best so far is held: a large model is a copy per weight
    return sorted(trials, key=lambda trial: recipe.merge.weights.index(trial.weight)), best


def _log(trials: list[MergeTrial]) -> None:
    for trial in trials:
        drops = "".join(f", general {name} {-drop:+.4f}" for name, drop in trial.general_drop.items())
        kept = " (kept)" if trial.chosen else ""
        low, high = trial.versus_unmerged or (0, 0)
        noise = f" (vs weight 1: 95 % CI [{low:+.4f}, {high:+.4f}])" if trial.versus_unmerged else ""
        run_logger().info(
            "Merge weight %.2f: eval %s %.4f%s%s%s", trial.weight, trial.metric, trial.figure, noise, drops, kept
        )


@task(name="merge-with-base")
def merge_with_base(
    recipe: Recipe, model: TrainedModel, splits: Splits, base_metrics: dict[str, float], artifact_key: str | None
) -> TrainedModel:
    """The weight with the best eval figure whose general drop is within evaluate.max_general_drop, merged; the
    model as trained unless a merge is better beyond the noise."""
    out = Path(model.run_dir) / "merged"
    evaluators = build_evaluators(splits, "eval", recipe.evaluate), general_evaluators(splits, recipe.evaluate)
    base = load_model(model.base_model, model.base_model_revision, model.max_seq_length)
    finetuned = _full_weights(model, out)
    trials, best = _try_weights(recipe, (finetuned, base), evaluators, base_metrics)
    best[0].chosen = True
    _log(trials)
    model_dir = model.model_dir
    if best[0].weight != 1.0:
        model_dir = str(out / "model")
        shutil.rmtree(model_dir, ignore_errors=True)  # a half-written merge of an interrupted attempt
        best[1].save(model_dir)
    if artifact_key:
        create_markdown_artifact(
            f"## Merge with the base\n\n{merge_markdown(trials, recipe.merge.method)}",
            key=artifact_key,
            description=f"Merge weights tried on the eval split; kept {best[0].weight:g} (1: the model as trained)",
        )
    return model.model_copy(update={"model_dir": model_dir, "merge_trials": trials})
