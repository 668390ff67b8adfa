"""Everything knowable before training, checked at once: data, base model, trainer arguments, metrics, push target.

`embedforge validate` and `embedforge run` call it before any model is loaded for training, so a
mistake costs seconds, not a training run. Each stage says what it can check (tasks/*); this
module only asks them all and reports every problem, one line each, against the recipe file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flows.recipe import Recipe
from tasks.errors import EmbedforgeError, one_line
from tasks.evaluate import check_metric_names
from tasks.ingest import IngestConfig, required_columns, source_columns
from tasks.models import embedding_dimension, weights_size
from tasks.push import check_target, writable
from tasks.split import DEFAULT_GROUP
from tasks.train import check_training, space_needed


def _sources(recipe: Recipe) -> list[tuple[str, IngestConfig]]:
    sources = [("ingest", recipe.ingest)]
    sources += [(f"split.eval_sources[{i}]", source) for i, source in enumerate(recipe.split.eval_sources)]
    return sources + [(f"split.{part}_file", source) for part, source in recipe.files.items()]


def _check_source(field: str, source: IngestConfig) -> list[tuple[str, str]]:
    try:
        columns = source_columns(source)
    except EmbedforgeError as exc:
        where = "path_env" if source.path_env else "path"
        return [(field if "_file" in field else f"{field}.{where}", str(exc).removeprefix("ingest: "))]
    missing = [c for c in required_columns(source) if columns is not None and c not in columns]
    if missing:
        return [(f"{field}.columns", f"the data has no column {', '.join(map(repr, missing))}; it has {columns}")]
    return []


def _check_group(recipe: Recipe) -> list[tuple[str, str]]:
    group = recipe.split.group_by
    kept = [*recipe.ingest.columns, *DEFAULT_GROUP.values(), "anchor", "positive", "negative", *recipe.ingest.keep]
    if group and not recipe.split.eval_sources and group not in kept:
        return [("split.group_by", f"column {group!r} does not reach the split; add it to ingest.keep")]
    return []


def _evaluated(recipe: Recipe) -> dict[str, str]:
    sources = recipe.split.eval_sources or [recipe.ingest]
    return {source.name: source.kind for source in sources}


def _has_eval(recipe: Recipe) -> bool:
    return bool(recipe.split.eval_file or recipe.split.eval_size > 0)


def _check_models(recipe: Recipe) -> list[tuple[str, str]]:
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


def _check_space(recipe: Recipe, output_dir: Path) -> list[tuple[str, str]]:
    """The run directory's disk (and the local release target's, when it is another) holds what the run writes."""
    try:
        needed = space_needed(recipe.train)
    except EmbedforgeError:
        return []  # check_training names a base model that does not resolve
    if not needed:
        return []
    release = weights_size(recipe.train.base_model) if recipe.push.active and recipe.push.local_dir else 0
    wants = {"--output-dir": (output_dir, needed)}
    if release:
        wants["push.local_dir"] = (Path(recipe.push.local_dir), release)
    devices: dict[int, int] = {}
    problems = []
    for field, (folder, size) in wants.items():
        existing = next(p for p in [folder.resolve(), *folder.resolve().parents] if p.exists())
        device = existing.stat().st_dev
        devices[device] = devices.get(device, 0) + size
        free = shutil.disk_usage(existing).free
        if devices[device] > free:
            problems.append(
                (
                    field,
                    f"{existing} has {_gb(free)} free; this run writes about {_gb(devices[device])} "
                    "(the model, its checkpoints with optimizer state, the release)",
                )
            )
    return problems


def preflight(recipe: Recipe, source: str, output_dir: str | None = None) -> None:
    """Raise one EmbedforgeError listing every problem, `<file>: <field>: <problem>` a line; pass silently."""
    problems = [problem for field, config in _sources(recipe) for problem in _check_source(field, config)]
    problems += _check_group(recipe)
    problems += check_training(recipe.train, _has_eval(recipe))
    problems += _check_models(recipe)
    problems += check_metric_names(recipe.evaluate, _evaluated(recipe))
    problems += check_target(recipe.push)
    if output_dir and (problem := writable(Path(output_dir))):
        problems.append(("--output-dir", problem))
    problems += _check_space(recipe, Path(output_dir or "runs"))
    if problems:
        raise EmbedforgeError("\n".join(f"{source}: {field}: {one_line(message)}" for field, message in problems))
