"""Refit: the eval pairs carved out of the training data to choose on train too, once the choice is made."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from embedforge.flows.finetune import finetune
from embedforge.recipe import Recipe
from embedforge.tasks.refit import carved_eval, held_out_by
from embedforge.types import EvalSplit, Splits


def _recipe(**sections) -> Recipe:
    return Recipe.model_validate({"name": "r", "ingest": {"path": "d.jsonl"}, "train": {"base_model": "m"}} | sections)


def test_the_eval_pairs_stay_out_while_a_stage_after_training_reads_them():
    assert held_out_by(_recipe()) is None
    assert "merge" in held_out_by(_recipe(merge={"weights": [0.5, 1.0]}))
    assert "the trainer evaluates" in held_out_by(
        _recipe(train={"base_model": "m", "args": {"eval_strategy": "steps"}})
    )
    assert held_out_by(_recipe(split={"refit": False})) == "split.refit is false"


def test_an_eval_split_of_its_own_never_trains():
    splits = Splits(
        train="t.parquet",
        train_name="d",
        train_kind="retrieval",
        evaluation={"": EvalSplit(kind="retrieval", eval="e")},
    )
    assert carved_eval(_recipe(), splits) == "e"
    assert carved_eval(_recipe(split={"eval_file": "mine.jsonl"}), splits) is None
    assert carved_eval(_recipe(split={"eval_size": 0}), splits) is None


@pytest.mark.usefixtures("prefect_server")
def test_the_carved_eval_pairs_train_once_nothing_after_training_reads_them(recipe_dict, tmp_path):
    run = finetune(recipe=Recipe.model_validate(recipe_dict), output_dir=str(tmp_path / "runs"))
    splits = Path(run.run_dir) / "data" / "splits"
    rows = {path.relative_to(splits).as_posix(): pq.read_metadata(path).num_rows for path in splits.rglob("*.parquet")}
    (eval_rows,) = [n for name, n in rows.items() if name.endswith("/eval.parquet")]
    assert rows["train-and-eval.parquet"] == rows["train.parquet"] + eval_rows
    card = (Path(run.model_dir) / "README.md").read_text()
    assert f"The {eval_rows} eval pairs carved out of the training data were trained on too" in card
    # The trainer read the training and eval pairs (the test split is written before and read after, unchanged).
    assert f"Size: {rows['train-and-eval.parquet']} training samples" in card, card
