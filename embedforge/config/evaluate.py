"""The evaluate section: which numbers are measured, and which ones a model must reach to be published."""

from __future__ import annotations

from pydantic import ConfigDict, Field, field_validator, model_validator

from embedforge.config.ingest import IngestConfig
from embedforge.config.section import Section

# Gates on the headline's change from the base rather than on a metric the evaluators report.
GAIN_GATES = ("gain", "gain_lower_bound")


def check_matryoshka_dims(dims: list[int] | None) -> None:
    """Largest first: the first dim is the full-size one that the headline metric and the gates read."""
    dims = dims or []
    if any(a <= b for a, b in zip(dims, dims[1:])) or any(d <= 0 for d in dims):
        raise ValueError(f"matryoshka_dims: {dims} must be positive and strictly descending, largest first")


class EvaluateConfig(Section):
    """Which numbers are measured, and which ones a model must reach to be published."""

    model_config = ConfigDict(extra="forbid")

    matryoshka_dims: list[int] | None = Field(
        None,
        description="Report retrieval metrics at each of these dimensions (default: the MatryoshkaLoss dims, if any).",
    )
    distractors: bool = Field(
        False,
        description="Add the training split's passages to the retrieval corpus, "
        "so the test queries must also beat them.",
    )
    batch_size: int = Field(32, gt=0, description="Encoding batch size for evaluation.")
    prompts: dict[str, str] | None = Field(
        None,
        description="Prompts retrieval evaluation encodes with: anchor (queries) and positive (passages) "
        "(default: train.args.prompts, so a model trained with a query prompt is measured with it).",
    )
    headline: str | None = Field(
        None,
        description="Metric used by gates and the champion/challenger check (default: the first evaluator's "
        "primary metric).",
    )

    gates: dict[str, float] = Field(
        default_factory=dict,
        description="Minimum values, e.g. {cosine_ndcg@10: 0.6, gain: 0.0}; 'gain' is the headline's fine-tuned "
        "minus base, 'gain_lower_bound' the low end of the gain's 95 % bootstrap interval over the test queries "
        "(gain_lower_bound: 0.0 publishes only a gain beyond the noise; retrieval headlines only), 'over_bm25' the "
        "headline's fine-tuned minus BM25 on the same queries (over_bm25: 0.02 publishes only a model that beats "
        "keyword search by 0.02).",
    )
    language: str | None = Field(
        None,
        description="Language of the texts (ISO 639-1): BM25's stemmer and stopwords. Default: card.language's "
        "first, else en.",
    )

    general: list[IngestConfig] = Field(
        default_factory=list,
        description="Retrieval sets outside the domain, each an ingest section (a local file or a Hub dataset of "
        "anchor/positive pairs) used whole as a test set: what the fine-tune kept of the base model's general "
        "ability, measured for both models with the test split's evaluator settings.",
    )
    max_general_drop: float | None = Field(
        None,
        ge=0.0,
        description="Most a general set's primary metric may fall, base minus fine-tuned (e.g. 0.02); a larger "
        "drop rejects the run like a failed gate.",
    )

    @field_validator("language")
    @classmethod
    def _a_language_code(cls, language: str | None) -> str | None:
        # A name instead of a code would silently stem nothing: BM25 stems by ISO 639-1 code, as the card names them.
        if language is not None and not (len(language) == 2 and language.isalpha() and language.islower()):
            raise ValueError(f"{language!r} is not an ISO 639-1 code: write a two-letter code such as en, de or id")
        return language

    @model_validator(mode="after")
    def _descending(self) -> EvaluateConfig:
        check_matryoshka_dims(self.matryoshka_dims)
        return self

    @model_validator(mode="after")
    def _fractions(self) -> EvaluateConfig:
        # Retrieval, similarity and classification metrics lie in [-1, 1]; a gate of 80 means 80 %, written as a
        # percent, and no model would ever pass it. Thresholds (cosine_accuracy_threshold ...) are not shares.
        for name, value in self.gates.items():
            if abs(value) > 1 and not name.endswith("_threshold"):
                raise ValueError(
                    f"gates.{name}: {value:g} is above 1; metrics are fractions: for {value:g} % write {value / 100:g}"
                )
        if self.max_general_drop is not None and self.max_general_drop > 1:
            value = self.max_general_drop
            raise ValueError(
                f"max_general_drop: {value:g} is above 1; it is a fraction: for {value:g} % write {value / 100:g}"
            )
        return self

    @model_validator(mode="after")
    def _named_retrieval_sets(self) -> EvaluateConfig:
        # A general set's name prefixes its metrics and names its folder: it must say which set a figure is of.
        for i, source in enumerate(self.general):
            if not source.name:
                raise ValueError(f"general[{i}].name: give each general set a name (it prefixes its metrics)")
            if source.kind != "retrieval":
                raise ValueError(
                    f"general[{i}].kind: a general set is retrieval data (anchor/positive), not {source.kind}"
                )
        names = [source.name for source in self.general]
        if len(set(names)) < len(names):
            raise ValueError(f"general: give each set its own name (names: {names})")
        if self.max_general_drop is not None and not self.general:
            raise ValueError("max_general_drop: there is no evaluate.general set to measure the drop on")
        return self
