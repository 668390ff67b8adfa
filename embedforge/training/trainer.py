"""The SentenceTransformerTrainer a recipe describes: its arguments, loss, datasets, evaluator and callbacks."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import datasets
from huggingface_hub import constants as hub_constants
from sentence_transformers import (
    SentenceTransformerModelCardData,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
    util,
)
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from embedforge.columns import STANDARD_COLUMNS
from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.loss import LossConfig
from embedforge.config.train import RETIRED_ARGS, TrainConfig, training_arg_types
from embedforge.errors import EmbedforgeError
from embedforge.evaluators import build_evaluators
from embedforge.logs import run_logger
from embedforge.training.interrupt import StopOnCtrlC
from embedforge.training.progress import PrefectProgress, TrainingBar
from embedforge.types import Splits

# What the losses read: the standard columns, and the numbered negatives mining adds (negative_1, ...).
LOSS_INPUTS = {kind: required + optional for kind, (required, optional) in STANDARD_COLUMNS.items()}


def build_loss(model, config: LossConfig):
    kwargs = dict(config.args)
    if isinstance(kwargs.get("similarity_fct"), str):
        kwargs["similarity_fct"] = getattr(util, kwargs["similarity_fct"])
    loss = getattr(losses, config.name)(model, **kwargs)
    if config.matryoshka_dims:
        loss = losses.MatryoshkaLoss(
            model, loss, config.matryoshka_dims, config.matryoshka_weights, config.n_dims_per_step
        )
    return loss


def _loss_inputs(path: str, kind: str) -> datasets.Dataset:
    data = datasets.Dataset.from_parquet(path)
    return data.select_columns([c for c in data.column_names if c.rstrip("_0123456789") in LOSS_INPUTS[kind]])


def _train_dataset(splits: Splits) -> datasets.Dataset | datasets.DatasetDict:
    """The training rows; after mining, pairs without negatives train too, in batches of their own."""
    data = _loss_inputs(splits.train, splits.train_kind)
    if not splits.in_batch_only:
        return data
    return datasets.DatasetDict({"mined": data, "in_batch_only": _loss_inputs(splits.in_batch_only, splits.train_kind)})


def training_args(config: TrainConfig, checkpoints: Path, has_eval: bool) -> SentenceTransformerTrainingArguments:
    # The tracking run (MLflow, W&B) is named like the release: <recipe>-<run-id>.
    args = {
        "report_to": "none",
        "run_name": f"{checkpoints.parent.parent.name}-{checkpoints.parent.name}",
        **config.args,
    }
    for key in set(args) & set(RETIRED_ARGS) - set(training_arg_types()):
        run_logger().warning("train.args.%s is ignored: %s", key, RETIRED_ARGS[key])
        del args[key]
    if not has_eval and args.get("eval_strategy", "no") != "no":
        raise EmbedforgeError(
            "train.args.eval_strategy: evaluation during training needs an eval split (split.eval_size > 0)"
        )
    # Only in a torchrun rank: set outside one (the checks before a run), the backend makes the arguments look
    # for a process group that does not exist, and `embedforge run` of a devices: 2 recipe refused itself.
    ranked = "LOCAL_RANK" in os.environ
    if config.devices > 1 and ranked and not os.environ.get("CUDA_VISIBLE_DEVICES") and "ddp_backend" not in args:
        import torch

        if not torch.cuda.is_available():  # data-parallel on CPUs: torch's gloo backend
            args["ddp_backend"] = "gloo"
    try:
        return SentenceTransformerTrainingArguments(output_dir=str(checkpoints), **args)
    except (ValueError, ImportError) as exc:
        raise EmbedforgeError(f"train.args: {exc}") from exc


@contextlib.contextmanager
def quiet():
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _evaluation(args, splits: Splits, evaluate: EvaluateConfig):
    """(eval dataset, evaluator) for evaluation during training: the recipe's evaluators on the eval split."""
    if args.eval_strategy == "no":
        return None, None
    evaluators = build_evaluators(splits, "eval", evaluate)
    evaluator = evaluators[0] if len(evaluators) == 1 else SequentialEvaluator(evaluators)
    same_kind = [path for kind, path in splits.parts("eval").values() if kind == splits.train_kind]
    return (_loss_inputs(same_kind[0], splits.train_kind) if same_kind else None), evaluator


def card_data(splits: Splits) -> SentenceTransformerModelCardData:
    """What the trainer fills in for the card; the card stage adds what the recipe says (language, ids)."""
    # Offline, the card machinery must not ask the Hub about datasets or the base model.
    # One entry per training dataset the trainer gets (the library drops a list of another length, with a warning).
    names = [splits.train_name] + ([f"{splits.train_name} (in-batch negatives only)"] if splits.in_batch_only else [])
    return SentenceTransformerModelCardData(
        train_datasets=[{"name": name} for name in names], local_files_only=hub_constants.HF_HUB_OFFLINE
    )


def make_trainer(
    model, config: TrainConfig, args, splits: Splits, evaluate: EvaluateConfig
) -> SentenceTransformerTrainer:
    eval_dataset, evaluator = _evaluation(args, splits, evaluate)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=_train_dataset(splits),
        eval_dataset=eval_dataset,
        loss=build_loss(model, config.loss),
        evaluator=evaluator,
        callbacks=[PrefectProgress(), StopOnCtrlC()],
    )
    return with_our_progress(trainer)


def with_our_progress(trainer):
    """The trainer's bar, ours (it leaves the log lines to PrefectProgress); with the bar off, no printed dicts
    of losses either: the run log has them."""
    if trainer.args.disable_tqdm:
        trainer.remove_callback(PrinterCallback)
    else:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(TrainingBar)
    return trainer
