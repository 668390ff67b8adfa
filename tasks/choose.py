"""Choose how to mine: no mining and every `mine.choose` candidate each train a short run on the same pairs.
Whether mining helps depends on the data, and this measures it: a candidate replaces no mining only when its
eval figure is higher beyond the noise (the difference's 95 % interval over the eval queries lies above 0).

Side effect: writes ``<run>/data/mining-trials/<n>/`` (each candidate's mined pairs; its short-run model is
deleted once measured) and publishes the `<recipe>-mining` artifact with every candidate's figure. Only the
eval split is measured here: the test split stays unread until the chosen setting's full model is evaluated.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.task_runners import ThreadPoolTaskRunner

from embedforge.artifacts import create_markdown_artifact
from embedforge.config.mine import MineConfig
from embedforge.data_reports import MiningTrial
from embedforge.errors import EmbedforgeError
from embedforge.evaluators import build_evaluators, choice_figure
from embedforge.figures import Interval
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.recipe import Recipe
from embedforge.reports import trials_markdown
from embedforge.tasks.mine import mine_hard_negatives
from embedforge.training.run import run_training, short_run
from embedforge.types import Splits
from embedforge.uncertainty import better_beyond_noise, paired


@task(name="try-mining", cache_policy=INPUTS + TASK_SOURCE, persist_result=True)
def try_mining(
    recipe: Recipe, candidate: MineConfig | None, splits: Splits, trial_dir: str
) -> tuple[str, float, Splits, list[float] | None]:
    """Mine as the candidate says (or not at all), train a short run, and measure it on the eval split."""
    mined = mine_hard_negatives(candidate, splits, recipe.split.group_by, f"{trial_dir}/mined") if candidate else splits
    rows = pq.read_metadata(splits.train).num_rows
    model = run_training(
        short_run(recipe.train, recipe.mine.trial_steps, rows), mined, recipe.evaluate, Path(trial_dir)
    )
    evaluators = build_evaluators(mined, "eval", recipe.evaluate)
    short = load_model(model.model_dir, max_seq_length=model.max_seq_length)
    metric, figure, per_query = choice_figure(short, evaluators, recipe.evaluate.headline)
    shutil.rmtree(model.model_dir)  # measured: a copy of the base model's size per candidate is not worth keeping
    return metric, figure, mined, per_query


def _differences(results: list[tuple]) -> list[Interval | None]:
    """Each candidate's figure minus no mining's, eval query by eval query (None: no per-query figures)."""
    return [None] + [paired(results[0][3], result[3]) for result in results[1:]]


def _winner(results: list[tuple], differences: list[Interval | None]) -> int:
    """No mining, unless a candidate beats it beyond the noise; of those, the best figure (the earlier on a tie).

    Without per-query figures (a non-retrieval eval split) the higher figure wins, as it did before intervals.
    """
    better = [
        n
        for n in range(1, len(results))
        if better_beyond_noise(differences[n] and differences[n].low, results[n][1], results[0][1])
    ]
    return max(better, key=lambda n: (results[n][1], -n)) if better else 0


def _trials(recipe: Recipe, results: list[tuple]) -> list[MiningTrial]:
    """One row per candidate, each with its difference from no mining, and the winner marked."""
    differences = _differences(results)
    best = _winner(results, differences)
    trials = []
    for n, (metric, figure, mined, _) in enumerate(results):
        trials.append(
            MiningTrial(
                name="no mining" if n == 0 else f"choose[{n - 1}]",
                settings=None if n == 0 else recipe.mine.choose[n - 1].model_dump(exclude_unset=True),
                metric=metric,
                figure=figure,
                without_negative=mined.mining.in_batch_only_rows if mined.mining else None,
                versus_none=[differences[n].low, differences[n].high] if differences[n] else None,
                chosen=n == best,
            )
        )
    return trials


@flow(name="choose-mining")
def _choose(recipe: Recipe, splits: Splits, out_dir: str, artifact_key: str | None) -> Splits:
    candidates = [None, *(recipe.mine.candidate(n) for n in range(len(recipe.mine.choose)))]
    futures = [try_mining.submit(recipe, c, splits, f"{out_dir}/{n}") for n, c in enumerate(candidates)]
    results = [future.result() for future in futures]
    trials = _trials(recipe, results)
    for trial in trials:
        settings = f" {trial.settings}" if trial.settings else ""
        chosen = " (chosen)" if trial.chosen else ""
        low, high = trial.versus_none or (None, None)
        noise = f" (vs no mining: 95 % CI [{low:+.4f}, {high:+.4f}])" if trial.versus_none else ""
        run_logger().info(
            "Mining candidate %s%s: eval %s %.4f%s%s", trial.name, settings, trial.metric, trial.figure, noise, chosen
        )
    winner = results[next(n for n, trial in enumerate(trials) if trial.chosen)][2]
    chosen = winner.model_copy(update={"mining_trials": trials})
    if artifact_key:
        create_markdown_artifact(f"## Hard-negative mining\n\n{trials_markdown(chosen)}", key=artifact_key)
    return chosen


def chosen_setting(mine: MineConfig, trials: list[MiningTrial]) -> MineConfig | None:
    """The mine section as the chosen candidate has it; None when no mining won."""
    (number,) = [n for n, trial in enumerate(trials) if trial.chosen]
    return mine.candidate(number - 1) if number else None


def choose_mining(recipe: Recipe, splits: Splits, out_dir: str, artifact_key: str | None = None) -> Splits:
    """The training data of the candidate that scored best on the eval split, with every candidate's figure."""
    if not splits.parts("eval"):
        raise EmbedforgeError(
            "mine.choose: the candidates are compared on the eval split, and this run has none (split.eval_size is 0)"
        )
    runner = ThreadPoolTaskRunner(max_workers=recipe.mine.parallel_trials)
    return _choose.with_options(task_runner=runner)(recipe, splits, out_dir, artifact_key)
