"""Rounds (corpus.rounds): the fine-tuned model re-judges and re-mines the generated pairs, the base trains again.

A generated pair the base judged well may still be noise, and one it judged badly may be fine: the model trained on
the corpus knows the domain better than the base did. From the second round on, the model kept so far keeps the
training pairs whose query ranks its own passage within corpus.filter.round_trip_k among the training passages
(round-trip consistency, as the filter does), mines their negatives when mine is set (the model's own mistakes), and
the base model trains again on them, as the first round did. A round is measured on the eval split and kept only
when better than the round kept before beyond the noise (the difference's 95 % interval over the eval queries above
0); the first round that is not ends the rounds, since the next would judge with the same model.

Side effect: writes ``<run>/rounds/<n>/`` (the round's pairs and model; nothing of the first round's ``<run>/model``
is touched) and publishes the ``<recipe>-rounds`` artifact with every round's figure.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from prefect import flow

from embedforge.artifacts import create_markdown_artifact
from embedforge.evaluators import build_evaluators, choice_figure
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.recipe import Recipe
from embedforge.reports import rounds_markdown
from embedforge.round_trip import round_trip
from embedforge.tasks.choose import chosen_setting
from embedforge.tasks.mine import mine_hard_negatives
from embedforge.tasks.train import train_model
from embedforge.types import RoundTrial, Splits, TrainedModel
from embedforge.uncertainty import better_beyond_noise, paired


def _measured(recipe: Recipe, splits: Splits, model_dir: str) -> tuple[str, float, list[float] | None]:
    """(metric, figure, figure per eval query) of one round's model on the eval split."""
    evaluators = build_evaluators(splits, "eval", recipe.evaluate)
    return choice_figure(load_model(model_dir), evaluators, recipe.evaluate.headline)


def _rows(splits: Splits) -> int:
    """Training pairs: those mining gave negatives and those left with in-batch negatives only."""
    return sum(pq.read_metadata(path).num_rows for path in (splits.train, splits.in_batch_only) if path)


def _round_data(recipe: Recipe, splits: Splits, judge: str, out: Path) -> Splits | str:
    """The training pairs the judge keeps by round trip, mined by the judge when the recipe mines; or why the round
    is not worth training."""
    pairs = pd.read_parquet(splits.unmined or splits.train)  # before mining: the judge mines anew
    keep = round_trip(pairs, recipe.corpus.filter.round_trip_k, judge, None)
    mine = chosen_setting(recipe.mine, splits.mining_trials) if recipe.mine and splits.mining_trials else recipe.mine
    if not keep.any():
        return "keeps no training pair"
    if keep.all() and not mine:  # the same pairs, unmined: the base would train exactly as before
        return "keeps every training pair and the recipe does not mine, so the round would train as it did"
    out.mkdir(parents=True, exist_ok=True)
    pairs[keep.to_numpy()].to_parquet(out / "pairs.parquet", index=False)
    update = {"train": str(out / "pairs.parquet"), "in_batch_only": None, "mining": None, "unmined": None}
    kept = splits.model_copy(update=update)
    if not mine:
        return kept
    mine = mine.model_copy(update={"model": judge, "model_revision": None})
    return mine_hard_negatives(mine, kept, recipe.split.group_by, str(out / "mined"))


def _next(recipe: Recipe, splits: Splits, kept: RoundTrial, number: int, run_dir: Path) -> tuple:
    """Round `number`: judged and mined by the round kept, trained from the base, measured on the eval split.
    (None, None) when it is not worth training."""
    out = run_dir / "rounds" / str(number)
    data = _round_data(recipe, splits, kept.model_dir, out / "data")
    if isinstance(data, str):
        run_logger().warning("Round %d: the model of round %d %s; the rounds end", number, kept.round, data)
        return None, None
    model = train_model(recipe.train.model_copy(update={"resume": False}), data, recipe.evaluate, str(out))
    metric, figure, per_query = _measured(recipe, splits, model.model_dir)
    trial = RoundTrial(round=number, pairs=_rows(data), metric=metric, figure=figure, model_dir=model.model_dir)
    return trial, per_query


def _log(trials: list[RoundTrial]) -> None:
    for trial in trials:
        low, high = trial.versus_kept or (0, 0)
        noise = f" (vs the round kept before: 95 % CI [{low:+.4f}, {high:+.4f}])" if trial.versus_kept else ""
        kept = " (kept)" if trial.kept else ""
        run_logger().info(
            "Round %d: %d pairs, eval %s %.4f%s%s", *(trial.round, trial.pairs), trial.metric, trial.figure, noise, kept
        )


@flow(name="rounds")
def train_rounds(recipe: Recipe, model: TrainedModel, splits: Splits, artifact_key: str | None) -> TrainedModel:
    """The first round is `model`; each next round is kept only when better on the eval split beyond the noise."""
    metric, figure, per_query = _measured(recipe, splits, model.model_dir)
    kept = RoundTrial(round=1, pairs=_rows(splits), metric=metric, figure=figure, model_dir=model.model_dir, kept=True)
    trials = [kept]
    for number in range(2, recipe.corpus.rounds + 1):
        trial, candidate = _next(recipe, splits, kept, number, Path(model.run_dir))
        if trial is None:
            break
        difference = paired(per_query, candidate)
        trial.versus_kept = [difference.low, difference.high] if difference else None
        trials.append(trial)
        if not better_beyond_noise(difference and difference.low, trial.figure, kept.figure):
            break
        kept.kept = False
        trial.kept = True
        kept, per_query = trial, candidate
    _log(trials)
    if artifact_key:
        create_markdown_artifact(f"## Rounds\n\n{rounds_markdown(trials)}", key=artifact_key)
    return model.model_copy(update={"model_dir": kept.model_dir, "round_trials": trials})
