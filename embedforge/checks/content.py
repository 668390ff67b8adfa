"""Pre-run checks of what the data holds: every local data file and document read as the run will read them.

The rows go through ingest's own steps (standard columns, row filter, label map, cleaning) and the documents
through the chunk stage's reader and chunker, so whatever the run would refuse in them, validate refuses first,
naming the file and row. A general set is compared with the domain's data as the split compares test with train.
"""

from __future__ import annotations

import datasets

from embedforge.chunking import Chunker, chunk_rows, load_tokenizer
from embedforge.datafiles import resolve_source
from embedforge.documents import read_documents
from embedforge.errors import EmbedforgeError
from embedforge.recipe import Recipe
from embedforge.standardize import read_source
from embedforge.tasks.split import shared_pairs


def read_local(field: str, source) -> tuple[list[tuple[str, str]], datasets.Dataset | None]:
    """(problems, rows) of a local source as ingest reads it; a Hub dataset is left to the run."""
    if resolve_source(source)[0] != "path":
        return [], None
    try:
        data, _, _ = read_source(source)
    except EmbedforgeError as exc:
        return [(field, str(exc).removeprefix("ingest: "))], None
    return [], data


def general_overlap(recipe: Recipe, general: dict[str, datasets.Dataset], domain: list[datasets.Dataset]):
    """(field, problem) for a general set (by its field) that shares pairs with the domain's data beyond
    split.max_overlap."""
    problems = []
    for field, data in general.items():
        name = recipe.evaluate.general[int(field.split("[")[1].rstrip("]"))].name
        count = shared_pairs(data, domain, "retrieval") if domain else 0
        if count > recipe.split.max_overlap * len(data):
            problems.append(
                (
                    field,
                    f"{count} of {len(data)} pairs of {name} share a text with the training, eval or test data; "
                    "a general set measures what the model kept outside its domain, so give one it never trains on",
                )
            )
    return problems


def check_documents(recipe: Recipe) -> list[tuple[str, str]]:
    """Every document read and cut as the chunk stage will: a binary, non-UTF-8, damaged or empty one is named."""
    if recipe.corpus is None:
        return []
    try:
        documents = read_documents(recipe.corpus)
    except EmbedforgeError as exc:
        return [_field_and_problem(exc)]
    try:
        tokenizer = load_tokenizer(recipe.train.base_model, recipe.train.base_model_revision)
    except EmbedforgeError:
        return []  # the corpus and training checks name a base model without a tokenizer
    try:
        chunk_rows(documents, Chunker(tokenizer, recipe.corpus))
    except EmbedforgeError as exc:
        return [_field_and_problem(exc)]
    return []


def _field_and_problem(exc: EmbedforgeError) -> tuple[str, str]:
    field, _, problem = str(exc).partition(": ")
    return (field, problem) if problem and " " not in field else ("corpus.path", str(exc))
