"""What the data-preparation stages hand on: chunk, generate, filter and mine. A leaf module, like embedforge.types."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CorpusReport(BaseModel):
    """What chunk hands on: how many documents and chunks, and where the chunks are."""

    documents: int
    chunks: int
    path: str


class GenerationReport(BaseModel):
    """What generate hands on: the pairs made, and what making them cost."""

    path: str
    method: str
    documents: int
    pairs: int
    chunks: int
    generated: int = Field(description="Chunks whose queries were made in this run.")
    cached: int = Field(description="Chunks whose queries came from the cache.")
    prompt_tokens: int = 0
    completion_tokens: int = 0


class FilterReport(BaseModel):
    """What filter hands on: the pairs kept for training, and how many each filter dropped."""

    path: str
    generated: int
    kept: int
    dropped: dict[str, int]
    generation: GenerationReport
    warning: str | None = Field(None, description="Why most pairs were dropped and what to change, when they were.")


class MiningReport(BaseModel):
    """What mining did: the model card, the log and the dashboard show it."""

    model: str
    rows: int
    mined_rows: int
    in_batch_only_rows: int
    negatives_per_anchor: int
    same_group_skipped: int = Field(description="Candidates ranked high enough but of the positive's own group.")
    few_candidates_rows: int = Field(0, description="Pairs without a negative: too few candidates passed the filters.")
    own_group_rows: int = Field(0, description="Pairs without a negative: the candidates were of their own group.")
    positive_score: float | None = Field(None, description="Mean similarity of anchor and positive (mined rows).")
    negative_score: float | None = Field(None, description="Mean similarity of anchor and mined negatives.")
    settings: dict
    warnings: list[str] = Field(default_factory=list, description="What went wrong, its likely cause, what to change.")


class MiningTrial(BaseModel):
    """One candidate `mine.choose` tried ('no mining' or 'choose[n]'): its short run's eval figure, and if it won."""

    name: str
    settings: dict | None = Field(None, description="The candidate's own fields; None for no mining.")
    metric: str
    figure: float
    without_negative: int | None = Field(None, description="Training pairs the candidate left without a negative.")
    versus_none: list[float] | None = Field(
        None, description="[low, high]: 95 % interval of this figure minus no mining's, eval query by eval query."
    )
    chosen: bool = False
