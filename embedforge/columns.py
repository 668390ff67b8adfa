"""The standard columns each kind of data has after ingest: what every stage reads, named once."""

from __future__ import annotations

from typing import Literal

Kind = Literal["retrieval", "similarity", "classification"]

# Required, then optional: retrieval pairs may carry a negative (or several, negative_1 ... after mining).
STANDARD_COLUMNS: dict[str, tuple[list[str], list[str]]] = {
    "retrieval": (["anchor", "positive"], ["negative"]),
    "similarity": (["sentence1", "sentence2", "score"], []),
    "classification": (["sentence1", "sentence2", "label"], []),
}
# The two texts of a pair, in the order the losses and evaluators read them.
PAIR_TEXTS = {kind: tuple(required[:2]) for kind, (required, _) in STANDARD_COLUMNS.items()}
TEXT_COLUMNS = {column for texts in PAIR_TEXTS.values() for column in texts} | {"negative"}
# What a pair carries beside its texts: a score for similarity data, a label for classification data.
VALUE_COLUMN = {"similarity": "score", "classification": "label"}


def columns(kind: str) -> list[str]:
    """Every standard column of a kind, required first."""
    required, optional = STANDARD_COLUMNS[kind]
    return required + optional
