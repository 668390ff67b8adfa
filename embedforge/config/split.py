"""The split section: how the data is divided; the test split only ever feeds the final numbers."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from embedforge.config.ingest import IngestConfig
from embedforge.config.section import Section


class SplitConfig(Section):
    """How the data is divided; the test split only ever feeds the final numbers."""

    model_config = ConfigDict(extra="forbid")

    eval_size: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of groups for the eval split (used during training, e.g. load_best_model_at_end).",
    )
    test_size: float = Field(0.1, gt=0.0, lt=1.0, description="Share of groups held out for the final numbers.")
    seed: int = Field(42, ge=0, description="Seed of the split; the same seed and data give the same split.")
    group_by: str | None = Field(
        None,
        description="Column whose equal values never cross splits; default: the passage (positive) or sentence1.",
    )
    eval_sources: list[IngestConfig] = Field(
        default_factory=list,
        description="Separate evaluation datasets, each an ingest section (e.g. STS-B beside SNLI training data); "
        "each is split into eval/test halves by eval_size:test_size, and the training data is then used whole "
        "for training.",
    )
    max_overlap: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of eval or test pairs allowed to share a text with the training split; above it the run "
        "is refused. Allowed overlap is logged and stated in the card.",
    )
    test_file: str | None = Field(
        None,
        description="A test file of its own (file, folder or glob, read with ingest's columns), used whole as the "
        "test split; test_size is then not used.",
    )
    eval_file: str | None = Field(
        None,
        description="An eval file of its own, used whole as the eval split (read like test_file); eval_size is then "
        "not used.",
    )

    refit: bool = Field(
        True,
        description="Once the choices made on the eval split carved out of the training data are made (mine.choose), "
        "its pairs train too. They stay out while a stage after training reads them (merge, train.args.eval_strategy); "
        "an eval_file or eval_sources never trains.",
    )

    @model_validator(mode="after")
    def _sizes(self) -> SplitConfig:
        if (self.test_file or self.eval_file) and self.eval_sources:
            raise ValueError("test_file/eval_file: give these or eval_sources, not both")
        for part in ("test", "eval"):
            if getattr(self, f"{part}_file") and f"{part}_size" in self.model_fields_set:
                raise ValueError(
                    f"{part}_size: {part}_file is used whole as the {part} split, so {part}_size would be ignored; "
                    "give one of the two"
                )
        if not self.eval_sources and sum(self.shares().values()) >= 1.0:
            raise ValueError("eval_size + test_size must leave rows for training")
        return self

    def shares(self) -> dict[str, float]:
        """What is carved out of the training data: the parts that have no file of their own."""
        return {"eval": 0.0 if self.eval_file else self.eval_size, "test": 0.0 if self.test_file else self.test_size}

    def files(self, train: IngestConfig) -> dict[str, IngestConfig]:
        """The test and eval files as ingest sections: the training data's name, kind and columns, their own path."""
        files = {"test": self.test_file, "eval": self.eval_file}
        return {
            # Used whole: a column kept for grouping the training data (ingest.keep) is not needed here.
            part: train.model_copy(update={"path": path, "path_env": None, "dataset": None, "limit": None, "keep": []})
            for part, path in files.items()
            if path
        }
