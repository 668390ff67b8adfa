"""Card: render the model card with sentence-transformers' own machinery, plus embedforge's report.

Side effect: writes ``<model>/README.md`` (and shows it in the Prefect dashboard).
"""

from __future__ import annotations

import pickle
from pathlib import Path

from huggingface_hub import constants as hub_constants
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field
from sentence_transformers.base.model_card import generate_model_card

from tasks.evaluate import EvaluateConfig, build_evaluators, gain_table, leaf_results
from tasks.ingest import IngestConfig
from tasks.models import load_model
from tasks.train import CARD_DATA_FILE


class CardConfig(BaseModel):
    """What the model card says about the model that the training cannot know."""

    model_config = ConfigDict(extra="forbid")

    model_name: str | None = Field(None, description="Title of the card (default: 'SentenceTransformer based on <base model>').")
    language: list[str] = Field(default_factory=list, description="ISO codes of the languages, e.g. [en] or [id].")
    license: str | None = Field(None, description="License id for the card's front matter, e.g. apache-2.0.")
    base_model_id: str | None = Field(None, description="Hub id of the base model, when train.base_model is a local or pkg: path.")
    datasets: list[str] = Field(default_factory=list, description="Hub ids of the training datasets, as the card links them.")
    tags: list[str] = Field(default_factory=list, description="Extra tags for the front matter.")

    def model_card_kwargs(self, train_data: IngestConfig, model_id: str | None = None) -> dict:
        """Arguments of SentenceTransformerModelCardData, given to the model before training."""
        dataset = {"name": train_data.name or (self.datasets[0] if self.datasets else "Unnamed Dataset")}
        if self.datasets:
            dataset["id"] = self.datasets[0]
        if train_data.revision:
            dataset["revision"] = train_data.revision
        return {
            "model_name": self.model_name,
            "language": self.language,
            "license": self.license,
            "model_id": model_id,
            "train_datasets": [dataset],
            "tags": ["sentence-transformers", "sentence-similarity", "feature-extraction", "embedforge", *self.tags],
            # Offline, the card must not ask the Hub about datasets or the base model.
            "local_files_only": hub_constants.HF_HUB_OFFLINE,
        }


def _report(metrics: dict, fingerprints: dict[str, str], recipe_yaml: str, flow_run_url: str | None) -> str:
    rows = gain_table(metrics)
    table = "\n".join(
        ["| Metric | Base | Fine-tuned | Δ |", "|:--|--:|--:|--:|"]
        + [f"| {'**' + r['metric'] + '**' if r['metric'] == metrics['headline'] else r['metric']} | {r['base']:.4f} | {r['fine-tuned']:.4f} | {r['delta']:+.4f} |" for r in rows]
    )
    lines = [
        "## Fine-tuning Report",
        "",
        "### Gain over the Base Model",
        "",
        "Both models measured with the same evaluators on the held-out test split, which neither training nor model selection saw.",
        "",
        table,
        "",
        "### Data Fingerprint",
        "",
        *[f"- `{name or 'data'}`: `{value}`" for name, value in fingerprints.items()],
        "",
        "### Recipe",
        "",
        "Produced by [embedforge](https://github.com/embedforge/embedforge) from this recipe:",
        "",
        "```yaml",
        recipe_yaml.strip(),
        "```",
        "",
    ]
    if flow_run_url:
        lines += [f"Prefect flow run: [{flow_run_url}]({flow_run_url})", ""]
    return "\n".join(lines) + "\n"


def _insert_before(content: str, heading: str, section: str) -> str:
    index = content.find(f"\n{heading}\n")
    return content + "\n" + section if index < 0 else content[: index + 1] + section + "\n" + content[index + 1 :]


def _card_data(model_dir: Path, run_dir: Path, config: CardConfig, push_repo_id: str | None):
    model = load_model(str(model_dir))
    data_file = run_dir / CARD_DATA_FILE
    if data_file.exists():
        with open(data_file, "rb") as handle:
            model.model_card_data = pickle.load(handle)
    data = model.model_card_data
    data.register_model(model)
    if config.base_model_id:
        data.base_model = config.base_model_id
    # Recomputed from the base model unless the recipe names the model; ids straight from the recipe,
    # since offline the card machinery cannot look them up.
    data.model_name = config.model_name
    data.datasets = list(config.datasets) or data.datasets
    data.model_id = push_repo_id
    return model, data


@task(name="render-model-card")
def render_model_card(config: CardConfig, model_dir: str, run_dir: str, splits: dict, evaluate: EvaluateConfig, metrics: dict,
                      fingerprints: dict[str, str], recipe_yaml: str, push_repo_id: str | None = None,
                      flow_run_url: str | None = None, artifact_key: str | None = None) -> str:
    """Render README.md beside the model, with the test-split results in its model-index; return its path."""
    model, data = _card_data(Path(model_dir), Path(run_dir), config, push_repo_id)
    training_logs = [dict(row) for row in data.training_logs]
    for evaluator in build_evaluators(splits, "test", evaluate, encode_once=False):
        for leaf, subset in leaf_results(evaluator, metrics["finetuned"]):
            data.set_evaluation_metrics(leaf, subset)
    data.training_logs = training_logs  # the final test numbers are not a training-time evaluation
    content = generate_model_card(model)
    content = _insert_before(content, "## Training Details", _report(metrics, fingerprints, recipe_yaml, flow_run_url))
    readme = Path(model_dir) / "README.md"
    readme.write_text(content, encoding="utf-8")
    if artifact_key:
        create_markdown_artifact(content, key=artifact_key, description="Model card of the latest run")
    get_run_logger().info("Model card written to %s", readme)
    return str(readme)
