"""What a measurement hands on: figures, the evaluators behind them, per-query figures and their doubt."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EvaluatorInfo(BaseModel):
    """One leaf evaluator of a measurement: its name, class, primary metric and metric keys."""

    name: str
    evaluator: str
    primary_metric: str
    metrics: list[str]


class Interval(BaseModel):
    """A 95 % bootstrap interval over the test queries: of a figure, or of a difference between two models."""

    low: float
    high: float
    n: int = Field(description="How many queries it was drawn from.")

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return f"95 % CI [{self.low:.4f}, {self.high:.4f}]"

    @property
    def signed(self) -> str:
        """As a difference reads: with its signs."""
        return f"95 % CI [{self.low:+.4f}, {self.high:+.4f}]"


class Measurement(BaseModel):
    """One model measured on the test split: flat figures, one entry per leaf evaluator, and per-query figures."""

    figures: dict[str, float]
    leaves: list[EvaluatorInfo]
    per_query: dict[str, list[float]] = Field(
        default_factory=dict, description="{metric: its value per test query, in the split's order}; retrieval only."
    )

    def kept(self, *keys: str) -> Measurement:
        """The same measurement with only these metrics' per-query figures (the others are not worth storing)."""
        return self.model_copy(update={"per_query": {k: v for k, v in self.per_query.items() if k in keys}})
