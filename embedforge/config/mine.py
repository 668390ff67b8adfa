"""The mine section: hard-negative mining before training, under sentence-transformers' own names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MineConfig(BaseModel):
    """Hard-negative mining before training; settings under sentence-transformers' own names."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model that ranks the candidates (default: train.base_model).")
    model_revision: str | None = Field(None, description="Revision of that model, when it is on the Hub.")
    num_negatives: int = Field(1, ge=1, description="Negatives per training pair.")
    range_min: int = Field(0, ge=0, description="Skip this many of the closest candidates (likely false negatives).")
    range_max: int | None = Field(None, gt=0, description="Consider candidates up to this rank (default: derived).")
    max_score: float | None = Field(None, description="Drop candidates scoring above this (too close to be negative).")
    min_score: float | None = Field(None, description="Drop candidates scoring below this (too easy to teach).")
    absolute_margin: float | None = Field(
        None, description="A negative must score at least this much below the positive."
    )
    relative_margin: float | None = Field(
        None, description="A negative must score at most (1 - this) times the positive's score."
    )
    sampling_strategy: Literal["top", "random"] = Field(
        "top", description="Take the hardest eligible candidates, or sample among them."
    )
    batch_size: int = Field(64, gt=0, description="Encoding batch size while mining.")
    use_faiss: bool = Field(False, description="Search with faiss (pip install faiss-cpu) for large corpora.")
    seed: int = Field(12, description="Seed of the random sampling strategy.")

    @model_validator(mode="after")
    def _a_window(self) -> MineConfig:
        if self.range_max is not None and self.range_max <= self.range_min:
            raise ValueError(f"range_max: {self.range_max} must be above range_min ({self.range_min})")
        if self.min_score is not None and self.max_score is not None and self.min_score >= self.max_score:
            raise ValueError(f"min_score: {self.min_score} must be below max_score ({self.max_score})")
        return self
