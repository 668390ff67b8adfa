"""Train: fine-tune the base model with SentenceTransformerTrainer and save it.

Side effect: writes ``<run>/checkpoints/`` and ``<run>/model/`` (plus the model card data
the card stage renders from, see ``TrainedModel``). Runs in-process, or under torchrun when ``devices > 1``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import functools
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import datasets
import torch
from huggingface_hub import constants as hub_constants
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from sentence_transformers import (
    SentenceTransformerModelCardData,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
    util,
)
from sentence_transformers.sentence_transformer import losses
from sentence_transformers.sentence_transformer.evaluation import SequentialEvaluator
from transformers.trainer_callback import ProgressCallback

from tasks.adapters import AdapterConfig, adapter_problem, add_adapter, merge_adapter, missing_targets
from tasks.errors import EmbedforgeError
from tasks.evaluate import EvaluateConfig, build_evaluators, check_matryoshka_dims
from tasks.interrupt import StopOnCtrlC, TrainingInterrupted, stop_on_ctrl_c, stop_requested
from tasks.logs import run_logger
from tasks.models import (
    TrainedModel,
    embedding_dimension,
    linear_module_names,
    load_model,
    max_positions,
    weights_size,
)
from tasks.progress import PrefectProgress, TrainingBar
from tasks.split import Splits
from tasks.tracking import link_tracking, tracking_env

# Arguments embedforge owns: where checkpoints go is part of the run directory layout.
RESERVED_ARGS = {"output_dir"}
# Arguments older seed cards list that transformers 5 no longer has: accepted, so a card's list
# still copies in, and dropped at training time with this reason logged.
RETIRED_ARGS = {"save_safetensors": "transformers 5 always saves safetensors"}
# Arguments whose zero or negative value the trainer accepts and then trains nonsense with (or divides by).
POSITIVE_ARGS = {
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "logging_steps",
    "save_steps",
    "eval_steps",
}
LOSS_INPUTS = {
    "retrieval": ["anchor", "positive", "negative"],
    "similarity": ["sentence1", "sentence2", "score"],
    "classification": ["sentence1", "sentence2", "label"],
}
# What a loss reads beside the texts. sentence-transformers does not declare it, so the common ones are named
# here: a score loss on retrieval pairs would fail at its first step, naming no field.
LOSS_NEEDS = {
    "score": {"CoSENTLoss", "AnglELoss", "CosineSimilarityLoss"},
    "label": {
        "SoftmaxLoss",
        "ContrastiveLoss",
        "OnlineContrastiveLoss",
        "BatchAllTripletLoss",
        "BatchHardTripletLoss",
        "BatchSemiHardTripletLoss",
        "BatchHardSoftMarginTripletLoss",
    },
}
KIND_GIVES = {"similarity": "score", "classification": "label"}
CARD_DATA_FILE = "model_card_data.pkl"


def _simple_type(hint) -> bool:
    """An annotation a YAML value can be checked against: numbers, booleans, text, their Literals and Optionals."""
    if hint in (int, float, bool, str) or typing.get_origin(hint) is typing.Literal:
        return True
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and all(
        arg is type(None) or _simple_type(arg) for arg in typing.get_args(hint)
    )


def loss_arg_problems(loss_class, args: dict[str, Any]) -> list[str]:
    """`args.<key>: <why>` for each loss argument whose value is not of the type the loss declares."""
    try:
        hints = typing.get_type_hints(loss_class.__init__)
    except Exception:  # an annotation that does not resolve: the loss checks its own arguments
        return []
    problems = []
    for key, value in args.items():
        hint = hints.get(key)
        if hint is None or not _simple_type(hint):
            continue
        try:
            TypeAdapter(hint).validate_python(value, strict=True)
        except ValidationError:
            shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
            problems.append(f"args.{key}: {value!r} is not a {shown}")
    return problems


def loss_data_problem(loss: str, kind: str) -> str | None:
    """Why this loss cannot train on this kind of data, or None."""
    for needs, names in LOSS_NEEDS.items():
        if loss in names and KIND_GIVES.get(kind) != needs:
            wanted = next(k for k, v in KIND_GIVES.items() if v == needs)
            return f"{loss} needs a {needs} per pair ({wanted} data); ingest.kind is {kind}"
    return None


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" — did you mean {close[0]}?" if close else ""


class LossConfig(BaseModel):
    """A loss from sentence_transformers.losses by class name, optionally wrapped in MatryoshkaLoss."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("MultipleNegativesRankingLoss", description="Class name in sentence_transformers.losses.")
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the loss "
        "(e.g. scale: 20.0, similarity_fct: cos_sim, gather_across_devices: true).",
    )
    matryoshka_dims: list[int] | None = Field(
        None, description="Wrap the loss in MatryoshkaLoss with these dims (largest first)."
    )
    matryoshka_weights: list[float] | None = Field(None, description="MatryoshkaLoss weight per dim (default: 1 each).")
    n_dims_per_step: int = Field(-1, description="MatryoshkaLoss dims sampled per step (-1: all).")

    @model_validator(mode="after")
    def _known(self) -> LossConfig:
        cls = getattr(losses, self.name, None)
        if not inspect.isclass(cls):
            raise ValueError(
                f"unknown loss {self.name!r}{_suggest(self.name, [n for n in dir(losses) if n.endswith('Loss')])}"
            )
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "model"}
        for key in self.args:
            if key not in params:
                raise ValueError(
                    f"args.{key}: not an argument of {self.name}{_suggest(key, params)} (it takes {sorted(params)})"
                )
        for problem in loss_arg_problems(cls, self.args):
            raise ValueError(problem)
        if self.matryoshka_weights and len(self.matryoshka_weights) != len(self.matryoshka_dims or []):
            raise ValueError("matryoshka_weights needs one weight per matryoshka_dims entry")
        check_matryoshka_dims(self.matryoshka_dims)
        return self


@functools.cache
def _training_arg_types() -> dict[str, Any]:
    hints = typing.get_type_hints(SentenceTransformerTrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init}


class TrainConfig(BaseModel):
    """The base model, loss and trainer arguments of a fine-tune."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        min_length=1, description="Hub id, local folder, or pkg:<package>/<folder> for weights a Python package ships."
    )
    base_model_revision: str | None = Field(
        None, description="Hub revision of the base model, pinned for reproducibility."
    )
    max_seq_length: int | None = Field(
        None, gt=0, description="Truncate inputs to this many tokens (default: the base model's)."
    )
    loss: LossConfig = Field(default_factory=LossConfig)
    args: dict[str, Any] = Field(
        default_factory=dict,
        description="SentenceTransformerTrainingArguments, by their own names "
        "(a seed card's hyperparameter list copies in).",
    )
    devices: int = Field(1, ge=1, description="Processes for data-parallel training (torchrun), normally one per GPU.")
    resume: bool = Field(True, description="Resume from the newest checkpoint in the run directory when there is one.")
    peft: AdapterConfig | None = Field(None, description="Train a LoRA adapter instead of every weight (pip: peft).")

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
            if key in POSITIVE_ARGS and isinstance(value, (int, float)) and value <= 0:
                raise ValueError(f"{key}: must be greater than 0 (got {value!r})")
        return args


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


def _training_args(config: TrainConfig, checkpoints: Path, has_eval: bool) -> SentenceTransformerTrainingArguments:
    # The tracking run (MLflow, W&B) is named like the release: <recipe>-<run-id>.
    args = {
        "report_to": "none",
        "run_name": f"{checkpoints.parent.parent.name}-{checkpoints.parent.name}",
        **config.args,
    }
    for key in set(args) & set(RETIRED_ARGS) - set(_training_arg_types()):
        run_logger().warning("train.args.%s is ignored: %s", key, RETIRED_ARGS[key])
        del args[key]
    if not has_eval and args.get("eval_strategy", "no") != "no":
        raise EmbedforgeError(
            "train.args.eval_strategy: evaluation during training needs an eval split (split.eval_size > 0)"
        )
    if config.devices > 1 and not os.environ.get("CUDA_VISIBLE_DEVICES") and "ddp_backend" not in args:
        import torch

        if not torch.cuda.is_available():
            args["ddp_backend"] = "gloo"
    try:
        return SentenceTransformerTrainingArguments(output_dir=str(checkpoints), **args)
    except (ValueError, ImportError) as exc:
        raise EmbedforgeError(f"train.args: {exc}") from exc


@contextlib.contextmanager
def _quiet():
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def check_training(config: TrainConfig, has_eval: bool) -> list[tuple[str, str]]:
    """(field, problem) for what would stop training before its first step: arguments, base model, dims."""
    problems = []
    try:
        # Building the arguments only to check them: their warnings belong to the training run.
        with tempfile.TemporaryDirectory() as scratch, _quiet():
            _training_args(config, Path(scratch), has_eval)
    except EmbedforgeError as exc:
        field, _, message = str(exc).partition(": ")
        problems.append((field, message))
    try:
        dimension = embedding_dimension(config.base_model, config.base_model_revision)
    except EmbedforgeError as exc:
        return [*problems, ("train.base_model", str(exc))]
    if config.peft and (problem := adapter_problem()):
        problems.append(("train.peft", problem))
    if config.peft and config.peft.target_modules:
        problems += _target_problems(config)
    problems += _reporting_problems(config.args)
    positions = max_positions(config.base_model, config.base_model_revision)
    if config.max_seq_length and positions and config.max_seq_length > positions:
        problems.append(("train.max_seq_length", f"{config.max_seq_length} exceeds the model's {positions} positions"))
    too_large = [d for d in config.loss.matryoshka_dims or [] if dimension and d > dimension]
    if too_large:
        problems.append(("train.loss.matryoshka_dims", f"{too_large} exceed the model's dimension {dimension}"))
    return problems


def space_needed(config: TrainConfig) -> int | None:
    """Bytes a run directory needs, estimated from the base model: the model, and each kept checkpoint's weights
    with the optimizer's two moments (3x); None when the model's size is not known."""
    size = weights_size(config.base_model)
    if not size:
        return None
    saves = config.args.get("save_strategy", "steps") != "no"
    kept = (config.args.get("save_total_limit") or 3) if saves else 0
    return size * (1 + 3 * kept)


def _target_problems(config: TrainConfig) -> list[tuple[str, str]]:
    """LoRA target modules the base model lacks: peft would stop at the first step, naming no field."""
    modules = linear_module_names(config.base_model, config.base_model_revision)
    missing = missing_targets(config.peft.target_modules, modules) if modules else []
    if not missing:
        return []
    leaves = sorted({name.rsplit(".", 1)[-1] for name in modules})
    return [("train.peft.target_modules", f"{missing} match no module of the base model; its Linear layers: {leaves}")]


def _reporting_problems(args: dict[str, Any]) -> list[tuple[str, str]]:
    """report_to integrations that are not installed: the trainer would fail at its first step."""
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    wanted = args.get("report_to") or []
    wanted = [wanted] if isinstance(wanted, str) else wanted
    available = get_available_reporting_integrations()
    missing = [name for name in wanted if name not in ("none", "all", *available)]
    if not missing:
        return []
    return [
        (
            "train.args.report_to",
            f"{', '.join(missing)} not installed here (installed: {', '.join(available) or 'none'}); "
            "pip install it, or leave it out",
        )
    ]


def _evaluation(args, splits: Splits, evaluate: EvaluateConfig):
    """(eval dataset, evaluator) for evaluation during training: the recipe's evaluators on the eval split."""
    if args.eval_strategy == "no":
        return None, None
    evaluators = build_evaluators(splits, "eval", evaluate)
    evaluator = evaluators[0] if len(evaluators) == 1 else SequentialEvaluator(evaluators)
    same_kind = [path for kind, path in splits.parts("eval").values() if kind == splits.train_kind]
    return (_loss_inputs(same_kind[0], splits.train_kind) if same_kind else None), evaluator


def _card_data(splits: Splits) -> SentenceTransformerModelCardData:
    """What the trainer fills in for the card; the card stage adds what the recipe says (language, ids)."""
    # Offline, the card machinery must not ask the Hub about datasets or the base model.
    return SentenceTransformerModelCardData(
        train_datasets=[{"name": splits.train_name}], local_files_only=hub_constants.HF_HUB_OFFLINE
    )


def _trainer(model, config: TrainConfig, args, splits: Splits, evaluate: EvaluateConfig) -> SentenceTransformerTrainer:
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
    if not args.disable_tqdm:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(TrainingBar)
    return trainer


def run_training(config: TrainConfig, splits: Splits, evaluate: EvaluateConfig, run_dir: Path) -> TrainedModel:
    """The training itself, in whichever process runs it."""
    trained = _trained(config, run_dir)
    model = load_model(
        config.base_model, config.base_model_revision, config.max_seq_length, model_card_data=_card_data(splits)
    )
    if config.peft:
        add_adapter(model, config.peft)
    trainer = _trainer(
        model, config, _training_args(config, run_dir / "checkpoints", bool(splits.parts("eval"))), splits, evaluate
    )
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
        saved = newest_checkpoint(run_dir / "checkpoints")
        raise TrainingInterrupted(
            f"training stopped on Ctrl-C after step {trainer.state.global_step}"
            + (f"; it resumes from {saved}" if saved else "; no checkpoint is saved (save_strategy), so it starts over")
        )
    if trainer.is_world_process_zero():
        model.save(trained.model_dir)
        if config.peft and config.peft.merge:
            merge_adapter(trained.model_dir)
        trained.save_card_data(model)
    return trained


def out_of_memory_message(config: TrainConfig) -> str:
    """Out of GPU memory fails the run (a Failed run is not retried: it would run out again) with what to change."""
    batch = config.args.get("per_device_train_batch_size", 8)
    return (
        f"train: out of GPU memory at per_device_train_batch_size = {batch}. Lower train.args."
        "per_device_train_batch_size, or keep the batch's in-batch negatives with train.loss.name: "
        "CachedMultipleNegativesRankingLoss and train.loss.args.mini_batch_size: 32 (memory of a 32-row batch)"
    )


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


def _trained(config: TrainConfig, run_dir: Path) -> TrainedModel:
    return TrainedModel(
        model_dir=str(run_dir / "model"),
        base_model=config.base_model,
        base_model_revision=config.base_model_revision,
        max_seq_length=config.max_seq_length,
        card_data=str(run_dir / CARD_DATA_FILE),
    )


def _launch_distributed(config: TrainConfig, splits: Splits, evaluate: EvaluateConfig, run_dir: Path) -> TrainedModel:
    """Data-parallel training: one torchrun process per device, each running this module."""
    spec_path = run_dir / "train_spec.json"
    spec = {"config": config.model_dump(), "splits": splits.model_dump(), "evaluate": evaluate.model_dump()}
    spec_path.write_text(json.dumps(spec))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={config.devices}",
        "-m",
        "tasks.train",
        str(spec_path),
    ]
    run_logger().info("Launching data-parallel training on %d devices: %s", config.devices, " ".join(command))
    completed = subprocess.run(command, cwd=str(Path(__file__).resolve().parent.parent))
    if completed.returncode != 0:
        raise EmbedforgeError(
            f"train: data-parallel training exited with status {completed.returncode}; "
            f"checkpoints are kept in {run_dir}/checkpoints"
        )
    return _trained(config, run_dir)


# No retries: a failed training is a bug or bad recipe, and a blind retry burns GPU hours.
@task(name="train-model", retries=0)
def train_model(
    config: TrainConfig, splits: Splits, evaluate: EvaluateConfig, run_dir: str, artifact_key: str | None = None
) -> TrainedModel:
    """Fine-tune and save the model in the run directory; evaluate settings serve evaluation during training.

    A run directory whose model was saved whole is not trained again: a retry or `embedforge resume`
    after a later stage failed goes straight on to evaluation.
    """
    trained = _trained(config, Path(run_dir))
    if Path(trained.card_data).exists():  # written after the model, so the model is complete
        run_logger().info("%s already holds this run's trained model; not training again", trained.model_dir)
        return trained
    run = Path(run_dir)
    with tracking_env(config.args, run):
        if config.devices > 1:
            trained = _launch_distributed(config, splits, evaluate, run)
        else:
            trained = run_training(config, splits, evaluate, run)
    link_tracking(config.args, run, config.args.get("run_name") or f"{run.parent.name}-{run.name}", artifact_key)
    return trained


if __name__ == "__main__":
    # Under torchrun there is no Prefect run context: log to the worker's output instead.
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING, format=f"%(asctime)s rank {rank} %(message)s"
    )
    spec_file = Path(sys.argv[1])
    spec = json.loads(spec_file.read_text())
    run_training(
        TrainConfig.model_validate(spec["config"]),
        Splits.model_validate(spec["splits"]),
        EvaluateConfig.model_validate(spec["evaluate"]),
        spec_file.parent,
    )
    # Tear the process group down before exit: left to interpreter shutdown, a rank can abort
    # ("terminate called without an active exception") and torchrun reports the run as failed.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
