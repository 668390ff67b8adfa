"""The rerank section: a cross-encoder fine-tuned beside the embedder, reordering the embedder's top results."""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from embedforge.config.section import Section
from embedforge.config.train import checked_trainer_args
from embedforge.errors import did_you_mean

# Each sentence-transformers CrossEncoder loss that the run's own data can feed, and the shape
# `mine_hard_negatives` gives its rows: the fine-tuned embedder mines the negatives.
LOSS_FORMATS = {
    "BinaryCrossEntropyLoss": "labeled-pair",
    "LambdaLoss": "labeled-list",
    "ListNetLoss": "labeled-list",
    "ListMLELoss": "labeled-list",
    "PListMLELoss": "labeled-list",
    "RankNetLoss": "labeled-list",
    "ADRMSELoss": "labeled-list",
    "MultipleNegativesRankingLoss": "n-tuple",
    "CachedMultipleNegativesRankingLoss": "n-tuple",
}
# Library losses whose labels the run's pairs do not have: said in one line instead of failing in training.
NEEDS_LABELS = {
    "MSELoss": "a teacher's score for each (query, passage) pair (distillation)",
    "MarginMSELoss": "a teacher's score margin for each (query, positive, negative)",
    "CrossEntropyLoss": "a class label for each pair (num_labels > 1)",
}
GATES = ("over_embedder", "over_embedder_lower_bound")


@functools.cache
def reranker_arg_types() -> dict[str, Any]:
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments  # seconds to import

    hints = typing.get_type_hints(CrossEncoderTrainingArguments)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(CrossEncoderTrainingArguments) if f.init}


class RerankConfig(Section):
    """A CrossEncoder trained from rerank.base_model on the run's training pairs, its hard negatives mined by the
    fine-tuned embedder (its mistakes are what the reranker must fix), published beside the embedder."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        min_length=1,
        description="A CrossEncoder, or any transformers encoder (Hub id, folder, pkg:<package>/<folder>): the "
        "library adds a classification head to a model without one.",
    )
    base_model_revision: str | None = Field(None, description="Hub revision of rerank.base_model.")
    top_k: int = Field(
        20,
        ge=2,
        description="How many of the embedder's top passages the reranker reorders, on the eval and test splits; "
        "the latency reported is per query at this k.",
    )
    loss: str = Field(
        "BinaryCrossEntropyLoss",
        description=f"A sentence-transformers CrossEncoder loss by its name: {', '.join(LOSS_FORMATS)}.",
    )
    loss_args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the loss.")
    negatives: int = Field(
        5, ge=1, description="Hard negatives per query, mined by the fine-tuned embedder among the training passages."
    )
    max_length: int | None = Field(None, gt=0, description="Truncate (query, passage) to this many tokens.")
    args: dict[str, Any] = Field(
        default_factory=lambda: {"num_train_epochs": 1, "per_device_train_batch_size": 16, "learning_rate": 2e-5},
        description="CrossEncoderTrainingArguments, by their own names. With an eval split the checkpoint of each "
        "epoch is measured there and the best is kept.",
    )
    gates: dict[str, float] = Field(
        default_factory=lambda: {"over_embedder": 0.0},
        description="Minimums for the reranker to go into the release, on the test split's headline: "
        "'over_embedder' the two-stage figure minus the embedder alone; 'over_embedder_lower_bound' the low end of "
        "its 95 % interval over queries. A reranker that misses one is left out; the embedder is still published.",
    )

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        if name in NEEDS_LABELS:
            raise ValueError(
                f"{name} needs {NEEDS_LABELS[name]}, which the run's pairs lack; one of {', '.join(LOSS_FORMATS)}"
            )
        if name not in LOSS_FORMATS:
            raise ValueError(f"{name!r} is not a CrossEncoder loss{did_you_mean(name, LOSS_FORMATS)}")
        return name

    @field_validator("gates")
    @classmethod
    def _known_gates(cls, gates: dict[str, float]) -> dict[str, float]:
        for name in gates:
            if name not in GATES:
                raise ValueError(f"{name}: unknown gate{did_you_mean(name, GATES)}; one of {', '.join(GATES)}")
        return gates

    @field_validator("args")
    @classmethod
    def _trainer_args(cls, args: dict[str, Any]) -> dict[str, Any]:
        return checked_trainer_args(args, reranker_arg_types(), "the reranker goes to <run>/reranker")

    @property
    def output_format(self) -> str:
        return LOSS_FORMATS[self.loss]
