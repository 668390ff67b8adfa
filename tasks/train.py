"""Train: fine-tune the base model with SentenceTransformerTrainer and save it.

Side effect: writes ``<run>/checkpoints/`` and ``<run>/model/`` (plus the model card data
the card stage renders from). Runs in-process, or under torchrun when ``devices > 1``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import difflib
import inspect
import json
import logging
import os
import pickle
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import datasets
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from sentence_transformers import (
    SentenceTransformerModelCardData,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
    util,
)
from sentence_transformers.sentence_transformer import losses
from transformers.trainer_utils import get_last_checkpoint

from tasks.errors import EmbedforgeError
from tasks.evaluate import EvaluateConfig, build_evaluators
from tasks.models import load_model
from tasks.progress import PrefectProgress, run_logger as _logger

# Arguments embedforge owns: where checkpoints go is part of the run directory layout.
RESERVED_ARGS = {"output_dir"}
# Arguments older seed cards list that transformers 5 no longer has: accepted, so a card's list
# still copies in, and dropped at training time with this reason logged.
RETIRED_ARGS = {"save_safetensors": "transformers 5 always saves safetensors"}
LOSS_INPUTS = {"retrieval": ["anchor", "positive", "negative"], "similarity": ["sentence1", "sentence2", "score"], "classification": ["sentence1", "sentence2", "label"]}
CARD_DATA_FILE = "model_card_data.pkl"


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" — did you mean {close[0]}?" if close else ""


class LossConfig(BaseModel):
    """A loss from sentence_transformers.losses by class name, optionally wrapped in MatryoshkaLoss."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("MultipleNegativesRankingLoss", description="Class name in sentence_transformers.losses.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the loss (e.g. scale: 20.0, similarity_fct: cos_sim, gather_across_devices: true).")
    matryoshka_dims: list[int] | None = Field(None, description="Wrap the loss in MatryoshkaLoss with these dims (largest first).")
    matryoshka_weights: list[float] | None = Field(None, description="MatryoshkaLoss weight per dim (default: 1 each).")
    n_dims_per_step: int = Field(-1, description="MatryoshkaLoss dims sampled per step (-1: all).")

    @model_validator(mode="after")
    def _known(self) -> "LossConfig":
        cls = getattr(losses, self.name, None)
        if not inspect.isclass(cls):
            raise ValueError(f"unknown loss {self.name!r}{_suggest(self.name, [n for n in dir(losses) if n.endswith('Loss')])}")
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
        for key in self.args:
            if key not in params:
                raise ValueError(f"args.{key}: not an argument of {self.name}{_suggest(key, params)} (it takes {sorted(params)})")
        if self.matryoshka_weights and len(self.matryoshka_weights) != len(self.matryoshka_dims or []):
            raise ValueError("matryoshka_weights needs one weight per matryoshka_dims entry")
        return self


@functools.cache
def _training_arg_types() -> dict[str, Any]:
    hints = typing.get_type_hints(SentenceTransformerTrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init}


class TrainConfig(BaseModel):
    """The base model, loss and trainer arguments of a fine-tune."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(description="Hub id, local folder, or pkg:<package>/<folder> for weights a Python package ships.")
    base_model_revision: str | None = Field(None, description="Hub revision of the base model, pinned for reproducibility.")
    max_seq_length: int | None = Field(None, gt=0, description="Truncate inputs to this many tokens (default: the base model's).")
    loss: LossConfig = Field(default_factory=LossConfig)
    args: dict[str, Any] = Field(default_factory=dict, description="SentenceTransformerTrainingArguments, by their own names (a seed card's hyperparameter list copies in).")
    devices: int = Field(1, ge=1, description="Processes for data-parallel training (torchrun), normally one per GPU.")
    resume: bool = Field(True, description="Resume from the newest checkpoint in the run directory when there is one.")

    @field_validator("args")
    @classmethod
    def _trainer_args(cls, args: dict[str, Any]) -> dict[str, Any]:
        types = _training_arg_types()
        for key, value in args.items():
            if key in RETIRED_ARGS and key not in types:
                continue
            if key in RESERVED_ARGS:
                raise ValueError(f"{key}: set by embedforge (checkpoints go to runs/<recipe>/<run-id>/checkpoints)")
            if key not in types:
                raise ValueError(f"{key}: unknown key{_suggest(key, types)}")
            try:
                TypeAdapter(types[key], config=ConfigDict(arbitrary_types_allowed=True)).validate_python(value)
            except (ValidationError, TypeError) as exc:
                message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                raise ValueError(f"{key}: {message} (got {value!r})") from None
        return args


def build_loss(model, config: LossConfig):
    kwargs = dict(config.args)
    if isinstance(kwargs.get("similarity_fct"), str):
        kwargs["similarity_fct"] = getattr(util, kwargs["similarity_fct"])
    loss = getattr(losses, config.name)(model, **kwargs)
    if config.matryoshka_dims:
        loss = losses.MatryoshkaLoss(model, loss, config.matryoshka_dims, config.matryoshka_weights, config.n_dims_per_step)
    return loss


def _train_dataset(path: str, kind: str) -> datasets.Dataset:
    data = datasets.Dataset.from_parquet(path)
    return data.select_columns([c for c in LOSS_INPUTS[kind] if c in data.column_names])


def _training_args(config: TrainConfig, checkpoints: Path, has_eval: bool) -> SentenceTransformerTrainingArguments:
    args = {"report_to": "none", **config.args}
    for key in set(args) & set(RETIRED_ARGS) - set(_training_arg_types()):
        _logger().warning("train.args.%s is ignored: %s", key, RETIRED_ARGS[key])
        del args[key]
    if not has_eval and args.get("eval_strategy", "no") != "no":
        raise EmbedforgeError("train.args.eval_strategy: evaluation during training needs an eval split (split.eval_size > 0)")
    if config.devices > 1 and not os.environ.get("CUDA_VISIBLE_DEVICES") and "ddp_backend" not in args:
        import torch

        if not torch.cuda.is_available():
            args["ddp_backend"] = "gloo"
    try:
        return SentenceTransformerTrainingArguments(output_dir=str(checkpoints), **args)
    except (ValueError, ImportError) as exc:
        raise EmbedforgeError(f"train.args: {exc}") from exc


def run_training(spec: dict) -> str:
    """The training itself, in whichever process runs it; returns the saved model's folder."""
    config = TrainConfig.model_validate(spec["config"])
    splits, run_dir = spec["splits"], Path(spec["run_dir"])
    model = load_model(config.base_model, config.base_model_revision, model_card_data=SentenceTransformerModelCardData(**spec["card_data"]))
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    train_kind = spec["train_kind"]
    eval_kind_entries = [e for e in splits["evaluation"].values() if "eval" in e]
    args = _training_args(config, run_dir / "checkpoints", bool(eval_kind_entries))
    evaluator = None
    eval_dataset = None
    if args.eval_strategy != "no":
        from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator

        evaluators = build_evaluators(splits, "eval", EvaluateConfig.model_validate(spec["evaluate"]))
        evaluator = evaluators[0] if len(evaluators) == 1 else SequentialEvaluator(evaluators)
        same_kind = [e["eval"] for e in eval_kind_entries if e["kind"] == train_kind]
        eval_dataset = _train_dataset(same_kind[0], train_kind) if same_kind else None
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=_train_dataset(splits["train"], train_kind),
        eval_dataset=eval_dataset,
        loss=build_loss(model, config.loss),
        evaluator=evaluator,
        callbacks=[PrefectProgress()],
    )
    checkpoint = get_last_checkpoint(str(run_dir / "checkpoints")) if config.resume and (run_dir / "checkpoints").is_dir() else None
    if checkpoint:
        _logger().info("Resuming from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    model_dir = run_dir / "model"
    if trainer.is_world_process_zero():
        model.save(str(model_dir))
        _save_card_data(model, run_dir / CARD_DATA_FILE)
    return str(model_dir)


def _save_card_data(model, path: Path) -> None:
    """Keep what the trainer recorded for the card (logs, dataset stats, hyperparameters) for the card stage.

    A pickle, not JSON: the card machinery needs these objects back as they were, and the
    file lives and dies with the run directory in the same environment.
    """
    data = copy.copy(model.model_card_data)
    data.model = None
    data.code_carbon_callback = None
    data.eval_results_dict = {}
    with open(path, "wb") as handle:
        pickle.dump(data, handle)


def _launch_distributed(spec: dict, devices: int) -> str:
    """Data-parallel training: one torchrun process per device, each running this module."""
    spec_path = Path(spec["run_dir"]) / "train_spec.json"
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}", "-m", "tasks.train", str(spec_path)]
    _logger().info("Launching data-parallel training on %d devices: %s", devices, " ".join(command))
    completed = subprocess.run(command, cwd=str(Path(__file__).resolve().parent.parent))
    if completed.returncode != 0:
        raise EmbedforgeError(f"train: data-parallel training exited with status {completed.returncode}; checkpoints are kept in {spec['run_dir']}/checkpoints")
    return str(Path(spec["run_dir"]) / "model")


# No retries: a failed training is a bug or bad recipe, and a blind retry burns GPU hours.
@task(name="train-model", retries=0)
def train_model(config: TrainConfig, splits: dict, train_kind: str, evaluate: EvaluateConfig, card_data: dict, run_dir: str) -> str:
    """Fine-tune and save; return the model folder."""
    spec = {"config": config.model_dump(), "splits": splits, "train_kind": train_kind, "evaluate": evaluate.model_dump(), "card_data": card_data, "run_dir": run_dir}
    if config.devices > 1:
        return _launch_distributed(spec, config.devices)
    return run_training(spec)


if __name__ == "__main__":
    # Under torchrun there is no Prefect run context: log to the worker's output instead.
    logging.basicConfig(level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING, format="%(asctime)s rank " + os.environ.get("RANK", "0") + " %(message)s")
    run_training(json.loads(Path(sys.argv[1]).read_text()))
