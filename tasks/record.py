"""What a run records about itself: the card's report and the release's training_meta.json both read it."""

from __future__ import annotations

from pydantic import BaseModel

from tasks.evaluate import Metrics
from tasks.ingest import IngestReport
from tasks.models import TrainedModel


class RunRecord(BaseModel):
    """Where a model came from: recipe, run, flow run and data."""

    recipe: str
    recipe_yaml: str
    recipe_hash: str
    run_id: str
    run_dir: str
    flow_run_id: str | None = None
    flow_run_url: str | None = None
    repo_id: str | None = None
    data: list[IngestReport]
    files: dict[str, IngestReport] = {}

    @property
    def release(self) -> str:
        """A release's name: the recipe and the run, so a tag or folder says where the model came from."""
        return f"{self.recipe}-{self.run_id}"

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
        "run_id": record.run_id,
        "flow_run_id": record.flow_run_id,
        "base_model": model.base_model,
        "base_model_revision": model.base_model_revision,
        "data_fingerprint": record.fingerprints,
        "headline": metrics.headline,
        "metrics": metrics.finetuned,
    }
