"""The ingest section: where one dataset comes from and how its columns map onto the standard ones."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from embedforge.columns import STANDARD_COLUMNS, Kind, columns
from embedforge.config.section import Section


class IngestConfig(Section):
    """Where one dataset comes from and how its columns map onto the standard ones."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="Name evaluators and the card use for this data (e.g. dnd_validation, sts-dev).")
    kind: Kind = Field(
        "retrieval",
        description="retrieval: anchor/positive[/negative]; similarity: sentence1/sentence2/score; "
        "classification: sentence1/sentence2/label.",
    )
    path: str | None = Field(
        None,
        description="Local JSONL/CSV/Parquet file, folder or glob "
        "(relative to the working directory, the project root).",
    )
    path_env: str | None = Field(
        None, description="Environment variable holding the path or Hub dataset id when the operator supplies the data."
    )
    dataset: str | None = Field(None, description="Hugging Face Hub dataset id, loaded with datasets.load_dataset.")
    config: str | None = Field(None, description="Hub dataset configuration name.")
    split: str = Field("train", description="Hub dataset split.")
    revision: str | None = Field(None, description="Hub dataset revision (commit, tag or branch).")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Standard column -> source column, for the columns whose names differ."
    )
    where: dict[str, Any] = Field(
        default_factory=dict,
        description="Keep only rows whose column equals this value (e.g. SNLI entailment: {label: 0}).",
    )
    label_map: dict[Any, Any] = Field(
        default_factory=dict,
        description="Rewrite label/score values, e.g. SNLI to binary pairs: {0: 1, 1: 0, 2: 0}; "
        "rows whose value is not in the map are dropped.",
    )
    keep: list[str] = Field(
        default_factory=list, description="Extra source columns to keep, e.g. a group column for split.group_by."
    )
    limit: int | None = Field(None, gt=0, description="Keep at most this many rows (after filtering), for smoke runs.")
    min_rows: int = Field(10, ge=1, description="Fewer rows than this after cleaning is an error.")

    @model_validator(mode="after")
    def _one_source(self) -> IngestConfig:
        if sum(x is not None for x in (self.path, self.path_env, self.dataset)) != 1:
            raise ValueError("give exactly one of path, path_env or dataset")
        if self.label_map and self.kind == "retrieval":
            raise ValueError(
                "label_map: rewrites label or score values; retrieval data has neither "
                "(use kind: similarity or classification)"
            )
        unknown = set(self.columns) - set(columns(self.kind))
        if unknown:
            raise ValueError(f"columns: {sorted(unknown)} are not {self.kind} columns {columns(self.kind)}")
        return self

    @field_validator("name")
    @classmethod
    def _a_file_name(cls, name: str) -> str:
        # The name is a file and folder name in the run directory: "../x" would write outside it.
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"{name!r} is also a file name in the run directory; no / or \\, and not . or ..")
        # The datasets library reads a path with these as a glob: '{text[0]}' found no file of its own split.
        if globbed := sorted(set(name) & set("*?[]{}")):
            raise ValueError(f"{name!r} is also a file name, read as a glob pattern: no {' '.join(globbed)}")
        return name

    @property
    def label(self) -> str:
        """What files, folders and fingerprints call this data; an unnamed dataset is "data"."""
        return self.name or "data"


def required_columns(config: IngestConfig) -> list[str]:
    """Source columns the recipe names: the mapped standard columns, ingest.where and ingest.keep."""
    required, _ = STANDARD_COLUMNS[config.kind]
    return [config.columns.get(c, c) for c in required] + [c for c in [*config.where, *config.keep]]
