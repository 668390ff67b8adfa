"""What a measurement hands on: figures, the evaluators behind them, per-query figures and their doubt, and the
choices made on the eval split (merge weights, rounds)."""

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


class MergeTrial(BaseModel):
    """One weight `merge` tried: the fine-tuned model's share, its eval figure and general sets' drops, if kept."""

    weight: float
    metric: str
    figure: float
    general_drop: dict[str, float] = Field(default_factory=dict, description="{general set: base minus merged}.")
    versus_unmerged: list[float] | None = Field(
        None, description="[low, high]: 95 % interval of this figure minus weight 1's, eval query by eval query."
    )
    chosen: bool = False


class RoundTrial(BaseModel):
    """One training round `corpus.rounds` ran: the pairs it trained on, its eval figure, and if it was kept."""

    round: int
    pairs: int = Field(description="Training pairs the round trained on (the second on: those its judge kept).")
    metric: str
    figure: float
    versus_kept: list[float] | None = Field(
        None, description="[low, high]: 95 % interval of this figure minus the round kept before, eval query by query."
    )
    kept: bool = False
    model_dir: str


class RerankFigures(BaseModel):
    """The test split's headline for the embedder alone and with each reranker over its top_k, query by query."""

    metric: str
    top_k: int
    figures: dict[str, float] = Field(description="{'embedder', 'base reranker', 'fine-tuned reranker': figure}.")
    queries: dict[str, list[float]] = Field(description="The same keys: the figure of each test query, in order.")
    intervals: dict[str, Interval] = Field(
        default_factory=dict,
        description="95 % intervals: each two-stage figure's, and 'over_embedder' (paired: the fine-tuned reranker's "
        "two-stage figure minus the embedder alone).",
    )
    ms_per_query: float = Field(description="The fine-tuned reranker's median time to score top_k passages, on CPU.")
    untrained_head: bool = Field(False, description="rerank.base_model had no classification head: a random one.")
    kept: bool = False
    reason: str = Field("", description="Why the reranker is left out of the release.")
    test_key: str | None = Field(None, description="What the figures depend on besides the models: compared alike.")

    @property
    def two_stage(self) -> float:
        return self.figures["fine-tuned reranker"]
