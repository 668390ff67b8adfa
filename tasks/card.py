"""Card: render the model card with sentence-transformers' own machinery, plus embedforge's report.

Side effect: writes ``<model>/README.md`` (and shows it in the Prefect dashboard).
The card data the trainer filled in comes from ``TrainedModel``; this stage adds what only the
recipe knows (``CardConfig``) and the test-split results.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard
from prefect import task
from sentence_transformers.base.model_card import generate_model_card

from embedforge.artifacts import create_markdown_artifact
from embedforge.card_report import fine_tuning_report, sections
from embedforge.config.card import CardConfig
from embedforge.evaluators import card_evaluators, leaf_results
from embedforge.logs import run_logger
from embedforge.recipe import Recipe
from embedforge.redact import local_paths_hidden, redact
from embedforge.reports import rerank_markdown
from embedforge.reranking import RERANKER_LIBRARY_CARD
from embedforge.training.run import load_for_card
from embedforge.types import Metrics, RunRecord, Splits, TrainedModel

# The front-matter keys a reader looks for first; the rest (widget, model-index) the body repeats.
FRONT_MATTER_SHOWN = ["base_model", "language", "license", "library_name", "pipeline_tag", "datasets", "tags"]
DEFAULT_TAGS = ["sentence-transformers", "sentence-similarity", "feature-extraction", "embedforge"]


def _insert_before(content: str, heading: str, section: str) -> str:
    index = content.find(f"\n{heading}\n")
    return content + "\n" + section if index < 0 else content[: index + 1] + section + "\n" + content[index + 1 :]


def _recipe_fields(data, config: CardConfig, record: RunRecord) -> None:
    """The user-set fields, from the recipe: ids straight from it, since offline nothing can be looked up."""
    data.language, data.license, data.model_name = list(config.language), config.license, config.model_name
    data.tags = list(dict.fromkeys([*DEFAULT_TAGS, *config.tags, *data.tags]))
    data.base_model = config.base_model_id or data.base_model
    data.datasets = list(config.datasets) or data.datasets
    data.model_id = record.repo_id
    train = record.data[0]
    for dataset in data.train_datasets[:1]:
        dataset.update({"id": config.datasets[0]} if config.datasets else {})
        dataset.update({"revision": train.revision} if train.revision else {})


def dashboard_markdown(content: str) -> str:
    """The card as the Hub shows it: its front matter as a small table above the body, not as YAML text.

    The dashboard renders markdown only, so the raw front matter would read as a list of bullet points.
    """
    card = ModelCard(content)
    meta = card.data.to_dict()
    rows = [(key, meta[key]) for key in FRONT_MATTER_SHOWN if meta.get(key)]
    table = ["| Field | Value |", "|:--|:--|"] + [
        f"| {key} | {', '.join(map(str, v)) if isinstance(v, list) else v} |" for key, v in rows
    ]
    return "\n".join(table) + "\n\n" + card.text.lstrip()


@task(name="render-model-card")
def render_model_card(recipe: Recipe, model: TrainedModel, splits: Splits, metrics: Metrics, record: RunRecord) -> str:
    """Render README.md beside the model, with the test-split results in its model-index; return its path."""
    st_model = load_for_card(model)
    data = st_model.model_card_data
    data.register_model(st_model)
    _recipe_fields(data, recipe.card, record)
    training_logs = [dict(row) for row in data.training_logs]
    for evaluator in card_evaluators(splits, recipe.evaluate):
        # An unnamed dataset's metrics carry no prefix: look for them among the domain's figures only.
        for leaf, subset in leaf_results(evaluator, metrics.finetuned if evaluator.name else metrics.domain):
            data.set_evaluation_metrics(leaf, subset)
    data.training_logs = training_logs  # the final test numbers are not a training-time evaluation
    content = _insert_before(
        generate_model_card(st_model),
        "## Training Details",
        fine_tuning_report(metrics, record, splits, sections(recipe, model, metrics, record)),
    )
    # Published, often publicly: nothing of the worker's disk or secrets in it.
    content = local_paths_hidden(redact(content))
    readme = Path(model.model_dir) / "README.md"
    readme.write_text(content, encoding="utf-8")
    create_markdown_artifact(
        dashboard_markdown(content), key=record.artifact_key("model-card"), description="Model card of the latest run"
    )
    run_logger().info("Model card written to %s", readme)
    return str(readme)


RERANKER_TAGS = ["sentence-transformers", "cross-encoder", "reranker", "text-ranking", "embedforge"]


@task(name="render-reranker-card")
def render_reranker_card(recipe: Recipe, model: TrainedModel, metrics: Metrics, record: RunRecord) -> str:
    """The reranker's README.md: sentence-transformers' CrossEncoder card (written when it was saved), with the
    recipe's card fields, the two-stage figures and the recipe."""
    card = ModelCard((Path(model.run_dir) / RERANKER_LIBRARY_CARD).read_text(encoding="utf-8"))
    card.data.language, card.data.license = list(recipe.card.language) or None, recipe.card.license
    card.data.tags = list(dict.fromkeys([*RERANKER_TAGS, *recipe.card.tags, *(card.data.tags or [])]))
    report = [
        "## Two-stage Retrieval",
        "",
        f"Trained by embedforge beside the embedding model `{record.repo_id or record.release}` (the release's root "
        "folder), on the same training pairs, with hard negatives mined by that fine-tuned embedder. Measured on "
        "its held-out test split:",
        "",
        rerank_markdown(metrics.rerank),
        "",
        "### Recipe",
        "",
        f"```yaml\n{record.recipe_yaml.strip()}\n```",
    ]
    content = local_paths_hidden(redact(_insert_before(str(card), "## Training Details", "\n".join(report) + "\n")))
    readme = Path(model.reranker_dir) / "README.md"
    readme.write_text(content, encoding="utf-8")
    create_markdown_artifact(
        dashboard_markdown(content),
        key=record.artifact_key("reranker-card"),
        description="Reranker card of the latest run",
    )
    run_logger().info("Reranker card written to %s", readme)
    return str(readme)
