"""Everything knowable before training, checked at once: data, base model, trainer arguments, metrics, push target.

`embedforge validate` and `embedforge run` call it before any model is loaded for training, so a
mistake costs seconds, not a training run. Each section's checks live in embedforge.checks; this
module only asks them all and reports every problem, one line each, against the recipe file.
"""

from __future__ import annotations

from pathlib import Path

from embedforge.checks.corpus import check_corpus, check_endpoint
from embedforge.checks.data import check_data
from embedforge.checks.evaluation import check_metric_names
from embedforge.checks.export import check_export
from embedforge.checks.push import check_target, writable
from embedforge.checks.rerank import check_rerank
from embedforge.checks.space import check_space
from embedforge.checks.training import check_merge, check_models, check_training
from embedforge.datafiles import source_columns
from embedforge.errors import EmbedforgeError, one_line
from embedforge.logs import quiet_libraries
from embedforge.models import similarity_name
from embedforge.recipe import Recipe


def _evaluated(recipe: Recipe) -> dict[str, str]:
    sources = recipe.split.eval_sources or [recipe.ingest]
    return {source.name: source.kind for source in sources}


def _test_negatives(recipe: Recipe) -> bool:
    """Whether the test data has a negative column (triplet metrics); a source that cannot be read says yes."""
    if recipe.corpus:
        return False
    source = recipe.files.get("test") or (recipe.split.eval_sources or [recipe.ingest])[0]
    try:
        found = source_columns(source)
    except EmbedforgeError:
        return True  # check_data names the source
    return found is None or source.columns.get("negative", "negative") in found


def _has_eval(recipe: Recipe) -> bool:
    return bool(recipe.split.eval_file or recipe.split.eval_size > 0)


def _similarity(recipe: Recipe) -> str:
    try:
        return similarity_name(recipe.train.base_model, recipe.train.base_model_revision)
    except EmbedforgeError:
        return "cosine"  # check_training names a base model that does not resolve


def preflight(recipe: Recipe, source: str, output_dir: str | None = None) -> None:
    """Raise one EmbedforgeError listing every problem, `<file>: <field>: <problem>` a line; pass silently."""
    quiet_libraries()  # the data is read as the run reads it, without its libraries' progress bars
    problems = check_data(recipe) + check_corpus(recipe) + check_endpoint(recipe)
    problems += check_training(recipe.train, _has_eval(recipe))
    problems += (
        check_models(recipe) + check_merge(recipe) + check_rerank(recipe, _has_eval(recipe)) + check_export(recipe)
    )
    problems += check_metric_names(recipe.evaluate, _evaluated(recipe), _similarity(recipe), _test_negatives(recipe))
    problems += check_target(recipe.push)
    if output_dir and (problem := writable(Path(output_dir))):
        problems.append(("--output-dir", problem))
    problems += check_space(recipe, Path(output_dir or "runs"))
    if problems:
        raise EmbedforgeError("\n".join(f"{source}: {field}: {one_line(message)}" for field, message in problems))
