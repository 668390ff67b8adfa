"""What the stages hand each other: small typed values in a leaf module (pydantic only): no stage imports another."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from embedforge.columns import Kind
from embedforge.data_reports import FilterReport, MiningReport, MiningTrial
from embedforge.figures import EvaluatorInfo, Interval, MergeTrial, RerankFigures, RoundTrial

META_FILE = "training_meta.json"


def release_name(recipe: str | None, run_id: str | None) -> str:
    """A release's name: the recipe and the run, so a tag or folder says where the model came from."""
    return f"{recipe}-{run_id}"


def artifact_key(recipe: str, what: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only; recipe names may hold dots."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{recipe}-{what}")


class IngestReport(BaseModel):
    """What ingest hands on: where the cleaned rows are, how many, what was dropped, and their fingerprint."""

    name: str = Field(description="Evaluator prefix: the recipe's ingest.name, possibly empty.")
    label: str = Field(description="File and folder name of this data (the name, or 'data').")
    kind: Kind
    path: str
    source: str
    revision: str | None = Field(None, description="Hub dataset revision, when the data came from the Hub.")
    rows: int
    dropped: dict[str, int]
    fingerprint: str


class EvalSplit(BaseModel):
    """One evaluation dataset's held-out parts: eval (during training) and test (the final numbers)."""

    kind: Kind
    eval: str | None = None
    test: str | None = None
    overlap: dict[str, str] = Field(default_factory=dict, description="Per part: pairs sharing a text with training.")


class Splits(BaseModel):
    """What split hands on: the training rows (after mining: those with negatives), and each evaluation set's parts."""

    train: str
    in_batch_only: str | None = Field(None, description="Training pairs that train with in-batch negatives only.")
    unmined: str | None = Field(None, description="The training pairs as split wrote them, when mining replaced train.")
    mining: MiningReport | None = None
    mining_trials: list[MiningTrial] = Field(default_factory=list, description="What mine.choose tried and chose.")
    eval_trained: int = Field(0, description="Eval pairs carved out to choose on and trained on once chosen.")
    train_name: str = Field(description="The training data's label, as the card names the dataset.")
    train_kind: Kind
    evaluation: dict[str, EvalSplit]
    general: dict[str, str] = Field(default_factory=dict, description="{name: parquet} of evaluate.general's sets.")

    def parts(self, part: str) -> dict[str, tuple[str, str]]:
        """{evaluator name: (kind, parquet path)} of every dataset that has this part ("eval" or "test")."""
        return {
            name: (entry.kind, getattr(entry, part)) for name, entry in self.evaluation.items() if getattr(entry, part)
        }


class BackendTrial(BaseModel):
    """One serving backend measured beside the PyTorch model (the first row): its file in the release, figures."""

    backend: str
    file: str = Field(description="Path in the release, as `model_kwargs={'file_name': ...}` takes it.")
    metric: str
    figure: float | None = Field(None, description="The headline metric on the test split; None: not measured.")
    texts_per_s: float | None = None
    kept: bool = False
    reason: str = Field("", description="Why it is left out of the release.")


class TrainedModel(BaseModel):
    """What train hands on: the saved model, the base it came from, and what the trainer recorded for the card."""

    model_dir: str
    run_dir: str
    base_model: str
    base_model_revision: str | None = None
    max_seq_length: int | None = None
    card_data: str = Field(description="Pickle of the model card data the trainer filled in (logs, dataset stats).")
    merge_trials: list[MergeTrial] = Field(default_factory=list, description="The weights `merge` tried.")
    round_trials: list[RoundTrial] = Field(default_factory=list, description="The rounds `corpus.rounds` ran.")
    export_dir: str | None = Field(
        None, description="Where export wrote the backends' files, as the release holds them."
    )
    backends: list[BackendTrial] = Field(default_factory=list, description="PyTorch, then each backend exported.")
    reranker_dir: str | None = Field(None, description="The fine-tuned reranker, when the recipe has `rerank:`.")
    reranker_backends: list[BackendTrial] = Field(
        default_factory=list, description="The reranker's PyTorch row, then each backend exported (two-stage figures)."
    )


class Metrics(BaseModel):
    """What evaluate hands on: both models' test-split metrics, flat, and the headline metric's key."""

    headline: str
    base: dict[str, float]
    finetuned: dict[str, float]
    evaluators: list[EvaluatorInfo]
    test_key: str | None = Field(None, description="measurement_key of the figures; None: not known.")
    general: dict[str, list[str]] = Field(
        default_factory=dict, description="{evaluate.general set: its metric keys, its primary metric first}."
    )
    queries: dict[str, list[float]] = Field(
        default_factory=dict, description="{'base', 'finetuned': the headline per test query}; retrieval only."
    )
    intervals: dict[str, Interval] = Field(
        default_factory=dict,
        description="95 % bootstrap intervals: 'base', 'finetuned', 'gain' and 'over_bm25' (paired: fine-tuned "
        "minus BM25).",
    )
    baselines: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="{'bm25', 'hybrid': figures keyed as the fine-tuned model's} on the test split's retrieval data.",
    )
    rerank: RerankFigures | None = Field(None, description="Two-stage figures, when the recipe has `rerank:`.")

    @property
    def gain(self) -> float:
        return self.finetuned[self.headline] - self.base[self.headline]

    @property
    def served(self) -> tuple[float, list[float] | None]:
        """(headline, per query) of what the release serves: two-stage when its reranker is kept, else the embedder.
        What champion and challenger are compared on."""
        if self.rerank and self.rerank.kept:
            return self.rerank.two_stage, self.rerank.queries["fine-tuned reranker"]
        return self.finetuned[self.headline], self.queries.get("finetuned")

    @property
    def domain(self) -> dict[str, float]:
        """The fine-tuned model's figures on the domain's own data: what the headline and gates name."""
        general = {key for keys in self.general.values() for key in keys}
        return {key: value for key, value in self.finetuned.items() if key not in general}


class RunRecord(BaseModel):
    """Where a model came from: recipe, run, flow run and data."""

    recipe: str
    recipe_yaml: str
    recipe_hash: str
    model_hash: str = Field(description="Fingerprint of the recipe sections that make the model (not card or push).")
    base_model_id: str = Field(description="The base model as it is today: Hub commit, or content hash of a folder.")
    run_id: str
    run_dir: str
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    repo_id: str | None = None
    data: list[IngestReport]
    files: dict[str, IngestReport] = {}
    corpus: FilterReport | None = Field(None, description="How the training pairs were made from documents.")
    general: dict[str, IngestReport] = Field(default_factory=dict, description="evaluate.general's sets, ingested.")

    @property
    def release(self) -> str:
        return release_name(self.recipe, self.run_id)

    @property
    def fingerprints(self) -> dict[str, str]:
        return (
            {report.label: report.fingerprint for report in self.data}
            | {f"{report.label} ({part} file)": report.fingerprint for part, report in self.files.items()}
            | {f"{name} (general set)": report.fingerprint for name, report in self.general.items()}
        )

    @property
    def synthetic_test(self) -> bool:
        """The test queries were made from the documents, not written by people: no split.test_file beside a corpus."""
        return self.corpus is not None and "test" not in self.files

    def artifact_key(self, what: str) -> str:
        return artifact_key(self.recipe, what)
