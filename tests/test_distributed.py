"""Data-parallel training: two gloo processes on the CPU stand in for two GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedforge.flows.finetune import finetune
from embedforge.recipe import Recipe

from conftest import complete_checkpoints, trainer_state

pytestmark = pytest.mark.usefixtures("prefect_server")


def test_two_process_training_saves_one_model(recipe_dict, tmp_path):
    recipe_dict["train"]["devices"] = 2
    # In-batch negatives from both processes, as on two GPUs.
    recipe_dict["train"]["loss"] = {"args": {"gather_across_devices": True}}
    recipe_dict["train"]["args"].update({"num_train_epochs": 2, "save_strategy": "epoch"})
    result = finetune(recipe=Recipe.model_validate(recipe_dict), output_dir=str(tmp_path / "runs"))
    run_dir = Path(result.run_dir)
    assert [p.name for p in run_dir.iterdir() if p.is_dir() and (p / "modules.json").exists()] == ["model"]
    assert (run_dir / "model" / "model.safetensors").exists() and (run_dir / "model" / "README.md").exists()
    assert (run_dir / "train_spec.json").exists()  # what each torchrun process read
    # Each process trains on its half of the rows (sentence-transformers drops the last uneven batch
    # under DDP): 2 epochs x floor(rows / 2 / 16) steps, where one process would take 2 x ceil(rows / 16).
    import math

    import pandas as pd

    rows = len(pd.read_parquet(run_dir / "data" / "splits" / "train.parquet"))
    state = trainer_state(complete_checkpoints(run_dir / "checkpoints")[-1])
    assert state["global_step"] == 2 * math.floor(rows / 2 / 16) < 2 * math.ceil(rows / 16)
    assert result.finetuned > result.base
