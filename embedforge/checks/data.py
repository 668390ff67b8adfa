"""Pre-run checks of the data sections: every source can be read and has the columns the recipe names."""

from __future__ import annotations

import datasets

from embedforge.checks.content import general_overlap, read_local
from embedforge.columns import columns
from embedforge.config.ingest import IngestConfig, required_columns
from embedforge.datafiles import source_columns
from embedforge.errors import EmbedforgeError
from embedforge.recipe import Recipe


def sources(recipe: Recipe) -> list[tuple[str, IngestConfig]]:
    sources = [] if recipe.corpus else [("ingest", recipe.ingest)]  # a corpus recipe's pairs are made in the run
    sources += [(f"split.eval_sources[{i}]", source) for i, source in enumerate(recipe.split.eval_sources)]
    sources += [(f"evaluate.general[{i}]", source) for i, source in enumerate(recipe.evaluate.general)]
    return sources + [(f"split.{part}_file", source) for part, source in recipe.files.items()]


def check_source(field: str, source: IngestConfig) -> tuple[list[tuple[str, str]], datasets.Dataset | None]:
    """(problems, rows): the header first, then every row as ingest reads it."""
    where = field if "_file" in field else f"{field}.{'path_env' if source.path_env else 'path'}"
    try:
        found = source_columns(source)
    except EmbedforgeError as exc:
        return [(where, str(exc).removeprefix("ingest: "))], None
    missing = [c for c in required_columns(source) if found is not None and c not in found]
    if missing:
        return [(f"{field}.columns", f"the data has no column {', '.join(map(repr, missing))}; it has {found}")], None
    return read_local(where, source)


def check_group(recipe: Recipe) -> list[tuple[str, str]]:
    group = recipe.split.group_by
    kept = [*recipe.ingest.columns, *columns(recipe.ingest.kind), *recipe.ingest.keep]
    if group and not recipe.split.eval_sources and group not in kept:
        return [("split.group_by", f"column {group!r} does not reach the split; add it to ingest.keep")]
    return []


def check_data(recipe: Recipe) -> list[tuple[str, str]]:
    """(field, problem) for every data source of the recipe and its rows, the general sets' overlap with the
    domain's data, then the group column."""
    problems, read = [], {}
    for field, config in sources(recipe):
        found, read[field] = check_source(field, config)
        problems += found
    general = {field: data for field, data in read.items() if field.startswith("evaluate.general") and data is not None}
    domain = [data for field, data in read.items() if data is not None and field not in general]
    return problems + general_overlap(recipe, general, domain) + check_group(recipe)
