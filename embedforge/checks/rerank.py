"""Pre-run checks of the rerank section: what would stop the reranker after the embedder has trained for hours."""

from __future__ import annotations

import tempfile
from pathlib import Path

import datasets

from embedforge.checks.data import check_source
from embedforge.config.rerank import RerankConfig
from embedforge.errors import EmbedforgeError
from embedforge.models import max_positions
from embedforge.recipe import Recipe
from embedforge.training.reranker import reranker_args
from embedforge.training.trainer import quiet


def _args_problems(config: RerankConfig, selects: bool) -> list[tuple[str, str]]:
    try:
        with tempfile.TemporaryDirectory() as scratch, quiet():  # built only to be checked
            reranker_args(config, Path(scratch), selects)
    except EmbedforgeError as exc:
        return [("rerank.args", str(exc).removeprefix("rerank.args: "))]
    return []


def passages_in_test_split(recipe: Recipe) -> tuple[str, int] | None:
    """(where, about how many passages) the test split will hold; None when the run makes the data (documents)."""
    test_file = recipe.files.get("test")
    if recipe.corpus and not test_file:
        return None
    _, data = check_source("split.test_file" if test_file else "ingest", test_file or recipe.ingest)
    if not isinstance(data, datasets.Dataset) or "positive" not in data.column_names:
        return None  # check_data names what is wrong with the data
    passages = len(set(data["positive"]))
    if test_file:
        return "split.test_file", passages
    return f"split.test_size {recipe.split.test_size:g} of the data", round(passages * recipe.split.test_size)


def check_rerank(recipe: Recipe, has_eval: bool) -> list[tuple[str, str]]:
    """(field, problem): the base model resolves, its arguments build, and top_k leaves passages to leave out."""
    config = recipe.rerank
    if not config:
        return []
    problems = _args_problems(config, has_eval)
    try:
        positions = max_positions(config.base_model, config.base_model_revision)
    except EmbedforgeError as exc:
        return [*problems, ("rerank.base_model", str(exc))]
    if config.max_length and positions and config.max_length > positions:
        problems.append(("rerank.max_length", f"{config.max_length} exceeds the model's {positions} positions"))
    found = passages_in_test_split(recipe)
    if found and config.top_k >= found[1]:
        where, passages = found
        problems.append(
            (
                "rerank.top_k",
                f"{config.top_k} is not below the {passages} passages of the test split ({where}): the reranker would "
                "reorder them all, and the figures would not be those of a reranker over a retriever's top results",
            )
        )
    return problems
