"""The mine section: hard-negative mining before training, under sentence-transformers' own names."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from embedforge.config.section import Section


class MineCandidate(Section):
    """One setting `mine.choose` tries: the fields it names replace the section's own for that candidate."""

    model_config = ConfigDict(extra="forbid")

    num_negatives: int | None = Field(None, ge=1)
    range_min: int | None = Field(None, ge=0)
    range_max: int | None = Field(None, gt=0)
    max_score: float | None = None
    min_score: float | None = None
    absolute_margin: float | None = None
    relative_margin: float | None = None
    sampling_strategy: Literal["top", "random"] | None = None


class MineConfig(Section):
    """Hard-negative mining before training; settings under sentence-transformers' own names."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Model that ranks the candidates (default: train.base_model).")
    model_revision: str | None = Field(None, description="Revision of that model, when it is on the Hub.")
    prompts: dict[str, str] | None = Field(
        None,
        description="Prompts the ranking encodes with: anchor (queries) and positive (passages) (default, when "
        "mining with the base model: the training prompts, as the base model was made to be used).",
    )
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
    seed: int = Field(12, ge=0, description="Seed of the random sampling strategy.")
    choose: list[MineCandidate] = Field(
        default_factory=list,
        description="Settings to try (each replaces fields of this section); with no mining, each trains a short "
        "run and the best on the eval split is kept.",
    )
    trial_steps: int = Field(
        100, gt=0, description="Training steps of each short run mine.choose compares (at most the full run's)."
    )
    parallel_trials: int = Field(1, ge=1, description="Short runs at once (on a GPU worker: as many as fit in memory).")

    @model_validator(mode="after")
    def _a_window(self) -> MineConfig:
        if self.range_max is not None and self.range_max <= self.range_min:
            raise ValueError(f"range_max: {self.range_max} must be above range_min ({self.range_min})")
        if self.min_score is not None and self.max_score is not None and self.min_score >= self.max_score:
            raise ValueError(f"min_score: {self.min_score} must be below max_score ({self.max_score})")
        seen: dict[str, int] = {}
        for number, given in enumerate(self.choose):
            if not given.model_fields_set:
                raise ValueError(
                    f"choose[{number}]: names no setting, so it mines as the section does; give the settings it "
                    "tries, e.g. {range_min: 10, max_score: 0.95}"
                )
            try:
                settings = self.candidate(number).model_dump_json()
            except ValidationError as exc:
                message = exc.errors()[0]["msg"].removeprefix("Value error, ")
                field, _, rest = message.partition(": ")  # "range_max: ..." names the candidate's field
                raise ValueError(
                    f"choose[{number}].{field}: {rest}" if rest and " " not in field else f"choose[{number}]: {message}"
                ) from None
            if settings in seen:
                raise ValueError(f"choose[{number}]: mines as choose[{seen[settings]}] does; try each setting once")
            seen[settings] = number
        return self

    def candidate(self, number: int) -> MineConfig:
        """The section as `choose[number]` has it: its fields over this section's, and nothing more to choose."""
        fields = self.model_dump(exclude={"choose", "trial_steps", "parallel_trials"})
        fields |= self.choose[number].model_dump(exclude_unset=True)
        return MineConfig.model_validate(fields)
