"""Pre-run checks of the train section: what would stop training before its first step, found in seconds.

The trainer's own arguments are built once to be checked; the base model is read from its config files
(no weights), so a 7B base costs what a small one does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from embedforge.config.train import TrainConfig
from embedforge.errors import EmbedforgeError
from embedforge.models import embedding_dimension, linear_module_names, max_positions
from embedforge.recipe import Recipe
from embedforge.training.adapters import adapter_problem, missing_targets
from embedforge.training.trainer import quiet, training_args


def check_training(config: TrainConfig, has_eval: bool) -> list[tuple[str, str]]:
    """(field, problem) for what would stop training before its first step: arguments, base model, dims."""
    problems = []
    try:
        # Building the arguments only to check them: their warnings belong to the training run.
        with tempfile.TemporaryDirectory() as scratch, quiet():
            training_args(config, Path(scratch), has_eval)
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


def check_merge(recipe: Recipe) -> list[tuple[str, str]]:
    """merge runs on mergekit (through sentence-transformers' merge); without it a run would stop after training."""
    import importlib.metadata

    from packaging.version import Version

    if not recipe.merge:
        return []
    try:
        installed = importlib.metadata.version("mergekit")
    except importlib.metadata.PackageNotFoundError:
        return [("merge", "merging needs mergekit: pip install 'embedforge[merge]'")]
    if Version(installed) < Version("0.1.5"):
        return [("merge", f"sentence-transformers merges with mergekit >= 0.1.5; {installed} is installed")]
    return []


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


def check_models(recipe: Recipe) -> list[tuple[str, str]]:
    """The mining model resolves, and evaluation dims fit the base model's (dims above it would measure nothing)."""
    problems = []
    if recipe.mine and recipe.mine.model != recipe.train.base_model:
        try:
            embedding_dimension(recipe.mine.model, recipe.mine.model_revision)
        except EmbedforgeError as exc:
            problems.append(("mine.model", str(exc)))
    try:
        dimension = embedding_dimension(recipe.train.base_model, recipe.train.base_model_revision)
    except EmbedforgeError:
        return problems  # check_training names the base model
    too_large = [d for d in recipe.evaluate.matryoshka_dims or [] if dimension and d > dimension]
    if too_large and too_large != [d for d in recipe.train.loss.matryoshka_dims or [] if d > dimension]:
        problems.append(("evaluate.matryoshka_dims", f"{too_large} exceed the model's dimension {dimension}"))
    return problems


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"
