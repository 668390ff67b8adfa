"""A corpus recipe's training pairs: its documents chunked, queries generated for the chunks, the pairs filtered.

chunk -> generate (a subflow whose batches fan out on its task runner) -> filter. The pairs land in
``<run>/data/corpus/pairs.parquet``, which ingest then reads as any recipe's pairs file.
"""

from __future__ import annotations

from pathlib import Path

from embedforge.data_reports import FilterReport
from embedforge.recipe import Recipe
from embedforge.tasks.chunk import chunk_corpus
from embedforge.tasks.filter_pairs import filter_pairs
from embedforge.tasks.generate import generate_pairs
from embedforge.types import artifact_key


def query_cache(run_dir: Path) -> Path:
    """Beside the run directories (<output>/<recipe>/<run-id>): every run and worker that sees them shares it."""
    return run_dir.parent.parent / ".cache" / "queries"


def pairs_from_corpus(recipe: Recipe, run_dir: Path) -> FilterReport:
    """The training pairs made from the recipe's documents (their path), and how they were made."""
    out = str(run_dir / "data" / "corpus")
    chunks = chunk_corpus(recipe.corpus, recipe.train, out)
    generated = generate_pairs(recipe.corpus.generate, chunks, str(query_cache(run_dir)), out)
    return filter_pairs(recipe.corpus.filter, generated, recipe.train, out, artifact_key(recipe.name, "generation"))
