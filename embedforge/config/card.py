"""The card section: what the model card says about the model that the training cannot know."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from embedforge.config.section import Section


class CardConfig(Section):
    """What the model card says about the model that the training cannot know."""

    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(
        None, description="Title of the card (default: 'SentenceTransformer based on <base model>')."
    )
    language: list[str] = Field(default_factory=list, description="ISO codes of the languages, e.g. [en] or [id].")
    license: str | None = Field(None, description="License id for the card's front matter, e.g. apache-2.0.")
    base_model_id: str | None = Field(
        None, description="Hub id of the base model, when train.base_model is a local or pkg: path."
    )
    datasets: list[str] = Field(
        default_factory=list, description="Hub ids of the training datasets, as the card links them."
    )
    tags: list[str] = Field(default_factory=list, description="Extra tags for the front matter.")
