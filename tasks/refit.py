"""Refit: the eval pairs carved out of the training data train too, once the choices made on them are made.

A carved eval split is there to choose on (mine.choose's setting); once the choice is made, holding its pairs out of
the final training only costs data (scikit-learn's `refit`). They stay out while a stage after training still reads
them: merge's weights, corpus.rounds, or the trainer's own evaluation (train.args.eval_strategy, for logs or the best
checkpoint). An eval split of its own (split.eval_file, split.eval_sources) is never training data.

Side effect: writes ``<run>/data/splits/train-and-eval.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import datasets
from prefect import task

from embedforge.logs import run_logger
from embedforge.recipe import Recipe
from embedforge.types import Splits


def held_out_by(recipe: Recipe) -> str | None:
    """What keeps a carved eval split out of the final training; None when its pairs may train once chosen on."""
    split = recipe.split
    args = recipe.train.args
    if not split.refit:
        return "split.refit is false"
    if recipe.merge:
        return "merge chooses its weight on them after training"
    if recipe.corpus and recipe.corpus.rounds > 1:
        return "corpus.rounds compares the rounds on them"
    if recipe.rerank:
        return "rerank keeps the reranker's best epoch on them"
    if args.get("eval_strategy", "no") != "no":  # load_best_model_at_end is refused without it
        return "the trainer evaluates on them (train.args.eval_strategy)"
    return None


def carved_eval(recipe: Recipe, splits: Splits) -> str | None:
    """The eval parquet carved out of the training data, if this run has one."""
    if recipe.split.eval_file or recipe.split.eval_sources or not recipe.split.eval_size:
        return None
    (path,) = [path for _, path in splits.parts("eval").values()] or [None]
    return path


@task(name="fold-eval-into-training")
def fold_eval_into_training(splits: Splits, eval_path: str, out_dir: str) -> Splits:
    """The splits with the eval pairs added to the training pairs, and no eval split left."""
    train = datasets.Dataset.from_parquet(splits.train)
    held = datasets.Dataset.from_parquet(eval_path)
    path = Path(out_dir) / "train-and-eval.parquet"
    datasets.concatenate_datasets([train, held.select_columns(train.column_names)]).to_parquet(str(path))
    run_logger().info(
        "The %d eval pairs carved out of the training data train too, as nothing after training reads them "
        "(split.refit): %d training pairs",
        len(held),
        len(train) + len(held),
    )
    evaluation = {
        name: entry.model_copy(
            update={"eval": None, "overlap": {k: v for k, v in entry.overlap.items() if k != "eval"}}
        )
        for name, entry in splits.evaluation.items()
    }
    return splits.model_copy(update={"train": str(path), "evaluation": evaluation, "eval_trained": len(held)})
