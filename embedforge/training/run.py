"""The training itself, in whichever process runs it: the flow's own, or each torchrun rank.

Writes ``<run>/checkpoints/`` and ``<run>/model/``, then the card data the card stage renders from.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import pickle
from pathlib import Path

import torch

from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.train import TrainConfig
from embedforge.errors import EmbedforgeError
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.training.adapters import add_adapter, merge_adapter
from embedforge.training.interrupt import TrainingInterrupted, stop_on_ctrl_c, stop_requested, stopped_by
from embedforge.training.trainer import card_data, make_trainer, training_args
from embedforge.types import Splits, TrainedModel

CARD_DATA_FILE = "model_card_data.pkl"
# Whatever the full run asks of the trainer, a short run saves nothing, reports nowhere and evaluates once, after.
SHORT_RUN = {"save_strategy": "no", "eval_strategy": "no", "load_best_model_at_end": False, "report_to": "none"}


def short_run(config: TrainConfig, steps: int, rows: int) -> TrainConfig:
    """The full run's trainer settings for `steps` steps, never more than the full run would take."""
    args = config.args
    per_step = args.get("per_device_train_batch_size", 8) * args.get("gradient_accumulation_steps", 1)
    full = args.get("max_steps", -1)
    full = full if full > 0 else math.ceil(rows / per_step) * math.ceil(args.get("num_train_epochs", 3))
    args = {**args, **SHORT_RUN, "max_steps": min(steps, full)}
    return config.model_copy(update={"args": args, "resume": False, "devices": 1})


def trained_model(config: TrainConfig, run_dir: Path) -> TrainedModel:
    """Where a run's trained model is (or will be), and the base it is made from."""
    return TrainedModel(
        model_dir=str(run_dir / "model"),
        run_dir=str(run_dir),
        base_model=config.base_model,
        base_model_revision=config.base_model_revision,
        max_seq_length=config.max_seq_length,
        card_data=str(run_dir / CARD_DATA_FILE),
    )


def save_card_data(model, path: str) -> None:
    """Keep what the trainer recorded for the card (logs, dataset stats, hyperparameters).

    A pickle, not JSON: the card machinery needs these objects back as they were, and the
    file lives and dies with the run directory in the same environment.
    """
    data = copy.copy(model.model_card_data)
    data.model = None
    data.code_carbon_callback = None
    data.eval_results_dict = {}
    Path(path).write_bytes(pickle.dumps(data))


def load_for_card(trained: TrainedModel):
    """The fine-tuned model with the card data the trainer recorded put back."""
    model = load_model(trained.model_dir)
    if Path(trained.card_data).exists():
        model.model_card_data = pickle.loads(Path(trained.card_data).read_bytes())
    return model


def run_training(config: TrainConfig, splits: Splits, evaluate: EvaluateConfig, run_dir: Path) -> TrainedModel:
    """The training itself, in whichever process runs it."""
    trained = trained_model(config, run_dir)
    model = load_model(
        config.base_model, config.base_model_revision, config.max_seq_length, model_card_data=card_data(splits)
    )
    if config.peft:
        add_adapter(model, config.peft)
    args = training_args(config, run_dir / "checkpoints", bool(splits.parts("eval")))
    trainer = make_trainer(model, config, args, splits, evaluate)
    _train(trainer, config, run_dir)
    if trainer.is_world_process_zero():
        model.save(trained.model_dir)
        if config.peft and config.peft.merge:
            merge_adapter(trained.model_dir)
        save_card_data(model, trained.card_data)  # written last: a run whose card data exists has its model whole
    return trained


def _train(trainer, config: TrainConfig, run_dir: Path) -> None:
    """Train from the newest complete checkpoint; out of memory, a full disk and Ctrl-C end in one line."""
    checkpoint = newest_checkpoint(run_dir / "checkpoints") if config.resume else None
    if checkpoint:
        run_logger().info("Resuming from %s", checkpoint)
    try:
        with stop_on_ctrl_c():
            trainer.train(resume_from_checkpoint=checkpoint)
    except torch.OutOfMemoryError:
        raise EmbedforgeError(out_of_memory_message(config)) from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise EmbedforgeError(f"train: the disk of {run_dir} is full ({exc}); free space and resume") from None
        raise
    if stop_requested():
        raise TrainingInterrupted(
            f"training stopped on {stopped_by()} after step {trainer.state.global_step}{where_it_resumes(run_dir)}"
        )


def out_of_memory_message(config: TrainConfig) -> str:
    """Out of GPU memory fails the run (a Failed run is not retried: it would run out again) with what to change."""
    batch = config.args.get("per_device_train_batch_size", 8)
    return (
        f"train: out of GPU memory at per_device_train_batch_size = {batch}. Lower train.args."
        "per_device_train_batch_size, or keep the batch's in-batch negatives with train.loss.name: "
        "CachedMultipleNegativesRankingLoss and train.loss.args.mini_batch_size: 32 (memory of a 32-row batch)"
    )


def where_it_resumes(run_dir: Path) -> str:
    """The end of a stop's message: the checkpoint a resume starts from, or that there is none."""
    saved = newest_checkpoint(run_dir / "checkpoints")
    return f"; it resumes from {saved}" if saved else "; no checkpoint is saved (save_strategy), so it starts over"


def newest_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint that was saved whole; one cut off mid-save is skipped with a log line.

    The trainer writes trainer_state.json last, so a checkpoint without a readable one was killed while saving.
    """
    if not checkpoints.is_dir():
        return None
    found = [p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for folder in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text())
            return str(folder)
        except (OSError, ValueError):
            run_logger().warning("Skipping %s: it was not saved whole (killed while saving?)", folder)
    return None
