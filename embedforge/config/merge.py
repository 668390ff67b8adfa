"""The merge section: the fine-tuned model merged with its base, the weight chosen on the eval split."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from embedforge.config.section import Section


class MergeConfig(Section):
    """Merge the fine-tuned weights with the base's (LM-Cocktail), trying a few weights; sentence-transformers' own
    merge (mergekit), pip install 'embedforge[merge]'."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["linear", "slerp"] = Field(
        "linear", description="linear: a weighted average of the weights; slerp: spherical interpolation."
    )
    weights: list[float] = Field(
        [0.25, 0.5, 0.75, 1.0],
        min_length=1,
        description="The fine-tuned model's share of each merge tried (1.0: the fine-tuned model as trained). Each "
        "is measured on the eval split and the general sets; the one with the best eval figure whose general drop "
        "is within evaluate.max_general_drop is kept, and only it is measured on the test split. A merge replaces "
        "1.0 only when better beyond the noise (the difference's 95 % interval over the eval queries above 0).",
    )

    @field_validator("weights")
    @classmethod
    def _shares(cls, weights: list[float]) -> list[float]:
        if any(not 0.0 < w <= 1.0 for w in weights):
            raise ValueError(f"{weights}: each weight is the fine-tuned model's share, above 0 and at most 1")
        if len(set(weights)) < len(weights):
            raise ValueError(f"{weights}: each weight once")
        return weights
