"""One typed recipe per model: every stage's configuration, composed; defaults live in the stages.

A recipe file in deployments/ holds only what differs from those defaults.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from embedforge.columns import columns
from embedforge.config.card import CardConfig
from embedforge.config.corpus import CorpusConfig, with_corpus_pairs
from embedforge.config.deployment import DeploymentConfig
from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.export import ExportConfig
from embedforge.config.ingest import IngestConfig
from embedforge.config.loss import loss_data_problem
from embedforge.config.merge import MergeConfig
from embedforge.config.mine import MineConfig
from embedforge.config.push import PushConfig
from embedforge.config.rerank import RerankConfig
from embedforge.config.section import Section
from embedforge.config.split import SplitConfig
from embedforge.config.train import TrainConfig
from embedforge.errors import EmbedforgeError
from embedforge.recipe_file import apply_override, empty_sections, format_errors, non_finite, read_recipe_file
from embedforge.secrets import literal_secrets

# A release made with the same data, base model and these sections is what a new run would make again.
MODEL_SECTIONS = ("ingest", "split", "mine", "train", "evaluate")


class Recipe(Section):
    """Everything that makes one fine-tuned model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9.-]*$",
        description="Lowercase kebab-case name: the run folder, deployment and artifact keys use it.",
    )
    description: str = Field("", description="What this model is for.")
    corpus: CorpusConfig | None = Field(
        None, description="Documents to make the training pairs from, instead of an ingest.path of pairs."
    )
    ingest: IngestConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    mine: MineConfig | None = Field(None, description="Mine hard negatives from the training split before training.")
    train: TrainConfig
    merge: MergeConfig | None = Field(
        None, description="Merge the fine-tuned model with its base, weight chosen on eval."
    )
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    rerank: RerankConfig | None = Field(
        None, description="A cross-encoder reranker trained beside the embedder and published with it."
    )
    export: ExportConfig | None = Field(None, description="ONNX and OpenVINO files in the release, each measured.")
    card: CardConfig = Field(default_factory=CardConfig)
    push: PushConfig = Field(default_factory=PushConfig)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        # NaN passes every comparison check by failing none of them: a NaN gate always passes.
        found = non_finite(data)
        if found:
            raise ValueError(f"{found[0]}: not a finite number; give a number (NaN and infinity mean nothing here)")
        return data

    @model_validator(mode="before")
    @classmethod
    def _pairs_from_the_corpus(cls, data: Any) -> Any:
        return with_corpus_pairs(data)

    @model_validator(mode="after")
    def _evaluate_matryoshka_by_default(self) -> Recipe:
        # A Matryoshka model is judged at the dims it was trained for unless the recipe says otherwise.
        if self.evaluate.matryoshka_dims is None and self.train.loss.matryoshka_dims:
            self.evaluate.matryoshka_dims = list(self.train.loss.matryoshka_dims)
        return self

    @model_validator(mode="after")
    def _keyword_search_in_the_card_language(self) -> Recipe:
        # BM25 stems in the language the card declares for the model; English when it declares none.
        if self.evaluate.language is None:
            self.evaluate.language = self.card.language[0] if self.card.language else "en"
        return self

    @model_validator(mode="after")
    def _evaluate_with_the_training_prompts(self) -> Recipe:
        # Base and fine-tuned models are measured with the prompts the model is trained to expect.
        prompts = self.train.args.get("prompts")
        if self.evaluate.prompts is None and prompts:
            if isinstance(prompts, str):
                prompts = {"anchor": prompts, "positive": prompts}
            if not all(isinstance(value, str) for value in prompts.values()):
                raise ValueError(
                    "train.args.prompts: per-dataset prompts cannot be matched to the evaluators; "
                    "give column prompts (anchor: ..., positive: ...) or set evaluate.prompts"
                )
            self.evaluate.prompts = dict(prompts)
        return self

    @model_validator(mode="after")
    def _loss_reads_the_data(self) -> Recipe:
        if problem := loss_data_problem(self.train.loss.name, self.ingest.kind):
            raise ValueError(f"train.loss.name: {problem}")
        return self

    @model_validator(mode="after")
    def _prompts_for_columns_that_exist(self) -> Recipe:
        # A prompt for a column the data does not have would be silently unused.
        known = columns(self.ingest.kind)
        for field, prompts in (
            ("train.args.prompts", self.train.args.get("prompts")),
            ("evaluate.prompts", self.evaluate.prompts),
            ("mine.prompts", self.mine and self.mine.prompts),
        ):
            unknown = [key for key in prompts or {} if isinstance(prompts, dict) and key not in known]
            if unknown:
                raise ValueError(
                    f"{field}: no column {', '.join(map(repr, unknown))} in {self.ingest.kind} data ({known})"
                )
        return self

    @model_validator(mode="after")
    def _mine_with_the_base_model_by_default(self) -> Recipe:
        # Both mine negatives among passages retrieved for queries: pairs of other kinds have neither.
        for name, section in (("mine", self.mine), ("rerank", self.rerank)):
            if section and self.ingest.kind != "retrieval":
                raise ValueError(
                    f"{name}: hard negatives need retrieval pairs (anchor, positive); ingest.kind is {self.ingest.kind}"
                )
        if self.mine and not self.mine.model:
            self.mine.model, self.mine.model_revision = self.train.base_model, self.train.base_model_revision
            # A query-prompt model (Qwen3-Embedding, arctic-embed) ranks well only with its prompt.
            self.mine.prompts = self.mine.prompts or self.evaluate.prompts
        return self

    @model_validator(mode="after")
    def _eval_split_for_choices(self) -> Recipe:
        # Candidates are compared on the eval split, so the test split is read once, by the one chosen.
        choices = (
            ("mine.choose", self.mine and self.mine.choose),
            ("merge", self.merge),
            ("corpus.rounds", self.corpus and self.corpus.rounds > 1),
        )
        asks = [name for name, on in choices if on]
        if asks and not (self.split.eval_size or self.split.eval_file):
            raise ValueError(
                f"{asks[0]}: the candidates are compared on the eval split, and this recipe has none "
                "(set split.eval_size, or split.eval_file)"
            )
        return self

    @model_validator(mode="after")
    def _distinct_eval_sources(self) -> Recipe:
        # Each evaluation dataset gets its own folder and metric prefix, named after it.
        labels = [source.label for source in self.split.eval_sources]
        if len(set(labels)) < len(labels):
            raise ValueError(f"split.eval_sources: give each source its own name (names: {labels})")
        # Each set's evaluators are named after it: a general set named like the domain's data would mix figures.
        if taken := [g.name for g in self.evaluate.general if g.name in {d.name for d in self.sources}]:
            raise ValueError(f"evaluate.general: {taken} also names the domain's data; name the general set apart")
        return self

    @property
    def sources(self) -> list[IngestConfig]:
        """Every dataset the run reads: the training data first, then the separate evaluation sources."""
        return [self.ingest, *self.split.eval_sources]

    @property
    def files(self) -> dict[str, IngestConfig]:
        """The test and eval files that are used whole, read like the training data."""
        return self.split.files(self.ingest)

    def to_yaml(self) -> str:
        """The resolved recipe, defaults filled in and credentials redacted, as saved beside every run."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def card_yaml(self) -> str:
        """The recipe as a published card shows it: without the work pool's job variables, a worker's business."""
        data = self.model_dump(mode="json")
        data["deployment"].pop("job_variables", None)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:16]

    def model_fingerprint(self) -> str:
        """The sections that decide the model's weights and numbers; card, push and deployment do not."""
        # Later fields only when set (corpus, merge, export, general sets): recipes without them keep the fingerprint
        # their releases were made with, so upgrading embedforge retrains nothing. Export makes no weights, but a
        # release without the backends asked for is not what the recipe makes.
        unset = {"evaluate": {"general", "max_general_drop"}} if not self.evaluate.general else {}
        include = {
            *MODEL_SECTIONS,
            *(s for s in ("corpus", "merge", "rerank", "export") if getattr(self, s) is not None),
        }
        sections = self.model_dump(mode="json", include=include, exclude=unset)
        return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()[:16]


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe file; every problem is reported against the file and field."""
    path = Path(path)
    data = read_recipe_file(path)
    if not isinstance(data, dict):
        raise EmbedforgeError(f"{path}: a recipe is a YAML mapping of sections (ingest, train, ...)")
    # Top-level x- keys hold what anchors point to (`x-defaults: &defaults`), as in docker compose files.
    data = empty_sections(Recipe, {key: value for key, value in data.items() if not str(key).startswith("x-")})
    data.setdefault("name", path.stem)
    for assignment in overrides or []:
        apply_override(data, assignment)
    if found := literal_secrets(data):
        raise EmbedforgeError("\n".join(f"{path}: {field}: {problem}" for field, problem in found))
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise EmbedforgeError(format_errors(exc, str(path), Recipe)) from None


def recipe_files(paths: list[str] | None = None, folder: str = "deployments") -> list[Path]:
    """The given recipe files, or every recipe in deployments/."""
    if paths:
        return [Path(p) for p in paths]
    return sorted(p for p in Path(folder).glob("*.yaml") if not p.name.startswith("_"))
