"""The train section: the base model, loss and trainer arguments of a fine-tune, and its LoRA adapter."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from embedforge.config.loss import LossConfig
from embedforge.config.section import Section
from embedforge.errors import did_you_mean

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


class AdapterConfig(Section):
    """A LoRA adapter, under peft's LoraConfig names."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, gt=0, description="LoRA rank.")
    lora_alpha: int = Field(32, gt=0, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | str | None = Field(
        None, description="Module names to adapt, e.g. [q_proj, v_proj] (default: peft's choice for the architecture)."
    )
    merge: bool = Field(False, description="Publish the adapter merged into the base weights instead of alone.")


@functools.cache
def training_arg_types() -> dict[str, Any]:
    from sentence_transformers import SentenceTransformerTrainingArguments  # seconds to import: when first needed

    hints = typing.get_type_hints(SentenceTransformerTrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init}


def _without_contradictions(args: dict[str, Any]) -> dict[str, Any]:
    """Arguments transformers accepts together that cannot mean what they say."""
    if isinstance(args.get("seed"), int) and args["seed"] < 0:
        raise ValueError(f"seed: {args['seed']} is negative; numpy and torch take seeds from 0 to 2**32 - 1")
    # Accepted when both strategies are "no", and then there is no best model to load.
    defaults = {"save_strategy": "steps", "eval_strategy": "no"}
    off = [key for key, default in defaults.items() if args.get(key, default) == "no"]
    if args.get("load_best_model_at_end") and off:
        raise ValueError(
            f"load_best_model_at_end: has no effect with {off[0]} 'no' (nothing is "
            f"{'saved' if off[0] == 'save_strategy' else 'evaluated'}); set eval_strategy and save_strategy to "
            "steps or epoch, or remove it"
        )
    return args


def checked_trainer_args(args: dict[str, Any], types: dict[str, Any], where: str) -> dict[str, Any]:
    """Each argument is the trainer's, of its type, not one embedforge sets (`where` says where that goes), and
    positive where zero would train nonsense; the first problem raised as `<key>: <problem>`.

    A number written as a string (`max_steps: "80"`) or an integer written as a float (`per_device_train_batch_size:
    32.0`) comes back as the trainer's type: the trainer compares and counts with it.
    """
    checked = dict(args)
    for key, value in args.items():
        if key in RESERVED_ARGS:
            raise ValueError(f"{key}: set by embedforge ({where})")
        if key not in types:
            raise ValueError(f"{key}: unknown key{did_you_mean(key, types)}")
        try:
            read = TypeAdapter(types[key], config=ConfigDict(arbitrary_types_allowed=True)).validate_python(value)
        except (ValidationError, TypeError) as exc:
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise ValueError(f"{key}: {message} (got {value!r})") from None
        if isinstance(read, (bool, int, float)) and type(read) is not type(value):
            checked[key] = value = read
        if key in POSITIVE_ARGS and isinstance(value, (int, float)) and value <= 0:
            raise ValueError(f"{key}: must be greater than 0 (got {value!r})")
    return checked


class TrainConfig(Section):
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
        types = training_arg_types()
        given = {key: value for key, value in args.items() if key not in RETIRED_ARGS or key in types}
        given = checked_trainer_args(given, types, "checkpoints go to runs/<recipe>/<run-id>/checkpoints")
        return _without_contradictions(args | given)
