"""What a run records about itself: the card's report and the release's training_meta.json both read it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tasks.evaluate import Metrics
from tasks.ingest import IngestReport
from tasks.models import TrainedModel

META_FILE = "training_meta.json"


def release_name(recipe: str | None, run_id: str | None) -> str:
    """A release's name: the recipe and the run, so a tag or folder says where the model came from."""
    return f"{recipe}-{run_id}"


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

    @property
    def release(self) -> str:
        return release_name(self.recipe, self.run_id)

    @property
    def fingerprints(self) -> dict[str, str]:
        return {report.label: report.fingerprint for report in self.data} | {
            f"{report.label} ({part} file)": report.fingerprint for part, report in self.files.items()
        }


def release_meta(record: RunRecord, model: TrainedModel, metrics: Metrics) -> dict:
    """training_meta.json: what a published release says about how it was made."""
    return {
        "recipe": record.recipe,
        "recipe_hash": record.recipe_hash,
        "model_hash": record.model_hash,
        "base_model_id": record.base_model_id,
        "run_id": record.run_id,
        "flow_run_id": record.flow_run_id,
        "base_model": model.base_model,
        "base_model_revision": model.base_model_revision,
        "data_fingerprint": record.fingerprints,
        "headline": metrics.headline,
        "metrics": metrics.finetuned,
        "test_key": metrics.test_key,
    }


def changes(record: RunRecord, meta: dict) -> list[str]:
    """What makes this run's model differently from the release's training_meta.json; empty when nothing does."""
    found = []
    if meta.get("model_hash") != record.model_hash:
        found.append("the recipe's ingest, split, train or evaluate settings")
    if meta.get("base_model_id") != record.base_model_id:
        found.append(f"the base model ({meta.get('base_model_id')} -> {record.base_model_id})")
    published = meta.get("data_fingerprint") or {}
    for label in sorted(set(published) | set(record.fingerprints)):
        if published.get(label) != record.fingerprints.get(label):
            found.append(f"data {label}")
    return found
