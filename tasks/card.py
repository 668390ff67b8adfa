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
from embedforge.config.card import CardConfig
from embedforge.config.corpus import CorpusConfig
from embedforge.data_reports import FilterReport
from embedforge.evaluators import card_evaluators, leaf_results
from embedforge.logs import run_logger
from embedforge.recipe import Recipe
from embedforge.redact import local_paths_hidden, redact
from embedforge.reports import (
    BASELINES,
    corpus_markdown,
    doubt_markdown,
    export_markdown,
    gain_table,
    general_markdown,
    merge_markdown,
    mining_markdown,
    rounds_markdown,
    trials_markdown,
)
from embedforge.training.run import load_for_card
from embedforge.types import Metrics, RunRecord, Splits, TrainedModel

# The front-matter keys a reader looks for first; the rest (widget, model-index) the body repeats.
FRONT_MATTER_SHOWN = ["base_model", "language", "license", "library_name", "pipeline_tag", "datasets", "tags"]
SYNTHETIC_TEST = (
    " **Its queries were made from the documents, not written by people**: they show whether the model learned the "
    "documents, not how it serves real searches. Label 50-100 real queries as `split.test_file` for that."
)
DEFAULT_TAGS = ["sentence-transformers", "sentence-similarity", "feature-extraction", "embedforge"]


KEYWORD_NOTE = (
    "BM25: keyword search (bm25s, stemmed and without stopwords in `evaluate.language`) over the same corpus for the "
    "same queries; hybrid: BM25's and the fine-tuned model's rankings fused by reciprocal rank (k = 60)."
)


def _gain_markdown(metrics: Metrics) -> str:
    baselines = [BASELINES[name] for name in metrics.baselines]
    rows = ["| Metric | Base | Fine-tuned | Δ | Δ 95 % CI |" + "".join(f" {b} |" for b in baselines)]
    rows.append("|:--|--:|--:|--:|--:|" + "--:|" * len(baselines))
    for row in gain_table(metrics):
        name = f"**{row['metric']}**" if row["metric"] == metrics.headline else row["metric"]
        cells = f"{row['base']:.4f} | {row['fine-tuned']:.4f} | {row['delta']:+.4f} | {row['delta 95 % CI']}"
        cells += "".join(" | " + ("" if row[b] is None else f"{row[b]:.4f}") for b in baselines)
        rows.append(f"| {name} | {cells} |")
    note = f"\n\n{KEYWORD_NOTE}" if baselines else ""
    return "\n".join(rows) + note + "\n\n" + doubt_markdown(metrics)


def _overlap_lines(splits: Splits) -> list[str]:
    return [
        f"- `{name or splits.train_name}` {part}: {count}"
        for name, entry in splits.evaluation.items()
        for part, count in entry.overlap.items()
    ]


def _general(recipe: Recipe, metrics: Metrics) -> list[str]:
    if not metrics.general:
        return []
    return ["### General Ability", "", general_markdown(metrics, recipe.evaluate.max_general_drop)]


def _merge(recipe: Recipe, model: TrainedModel) -> list[str]:
    if not model.merge_trials:
        return []
    return ["### Merge with the Base Model", "", merge_markdown(model.merge_trials, recipe.merge.method)]


def _rounds(model: TrainedModel) -> list[str]:
    return ["### Rounds", "", rounds_markdown(model.round_trials)] if model.round_trials else []


def _backends(recipe: Recipe, model: TrainedModel, record: RunRecord) -> list[str]:
    if not model.backends:
        return []
    # A local release is loaded from its folder; `latest` is the newest one.
    where = record.repo_id or f"{recipe.push.local_dir or 'path/to/release'}/latest"
    loads = [
        f'model = SentenceTransformer("{where}", backend="{t.backend.split("-")[0]}", '
        f'model_kwargs={{"file_name": "{t.file}"}})'
        for t in model.backends[1:]
        if t.kept
    ]
    how = "Each loads with sentence-transformers' backends, which need optimum (`[onnx]` or `[openvino]` extras):"
    usage = [how, "", "```python", "from sentence_transformers import SentenceTransformer", "", *loads, "```", ""]
    return [
        "### Serving Backends",
        "",
        export_markdown(model.backends, recipe.export.max_drop),
        *(usage if loads else []),
    ]


def _made_from(config: CorpusConfig | None, report: FilterReport | None) -> list[str]:
    """How the training pairs were made from documents: the method, the model and prompt it used, the counts."""
    if config is None or report is None:
        return []
    how = {
        "llm": f"queries written by `{config.generate.llm.model}` at {config.generate.llm.base_url} for each chunk"
        if config.generate.llm
        else "",
        "crop": "two independent random crops of each chunk (Contriever)",
        "inverse_cloze": "a sentence of each chunk as the query, the rest of the chunk as the passage (inverse cloze)",
    }[config.generate.method]
    lines = ["### Training Data from Documents", "", f"The training pairs were made from `{config.path}`: {how}."]
    lines += ["", corpus_markdown(report)]
    if config.generate.llm:
        lines += ["Prompt:", "", "```", config.generate.llm.prompt.strip(), "```", ""]
    return lines


def _report(metrics: Metrics, record: RunRecord, splits: Splits, sections: list[str]) -> str:
    """embedforge's own section: gain over the base, `sections` (general ability, training data from documents),
    mining, overlap, data fingerprints and the recipe."""
    gain = "Both models measured with the same evaluators on the held-out test split, which neither training nor "
    gain += "model selection saw." + (SYNTHETIC_TEST if record.synthetic_test else "")
    lines = ["## Fine-tuning Report", "", "### Gain over the Base Model", "", gain, "", _gain_markdown(metrics), ""]
    lines += sections
    if splits.mining_trials:
        lines += ["### Hard Negatives", "", trials_markdown(splits)]
    elif splits.mining:
        lines += ["### Hard Negatives", "", mining_markdown(splits.mining)]
    lines += ["### Overlap with Training", "", "Held-out pairs that share a text with a training pair "]
    lines[-1] += "(`split.max_overlap` bounds it):"
    lines += ["", *_overlap_lines(splits), ""]
    if splits.eval_trained:
        lines += [f"The {splits.eval_trained} eval pairs carved out of the training data were trained on too, once "]
        lines[-1] += "every choice made on them was made (`split.refit`).\n"
    lines += ["### Data Fingerprint", ""]
    lines += [f"- `{name}`: `{value}`" for name, value in record.fingerprints.items()]
    lines += [
        "",
        "### Recipe",
        "",
        "Produced by [embedforge](https://github.com/embedforge/embedforge) from this recipe:",
    ]
    lines += ["", "```yaml", record.recipe_yaml.strip(), "```", ""]
    if record.flow_run_url:
        lines += [f"Prefect flow run: [{record.flow_run_url}]({record.flow_run_url})", ""]
    return "\n".join(lines) + "\n"


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


def _sections(recipe: Recipe, model: TrainedModel, metrics: Metrics, record: RunRecord) -> list[str]:
    """What this run did beyond training, each when it did it."""
    general = _general(recipe, metrics)
    return (
        general
        + _rounds(model)
        + _merge(recipe, model)
        + _backends(recipe, model, record)
        + _made_from(recipe.corpus, record.corpus)
    )


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
        _report(metrics, record, splits, _sections(recipe, model, metrics, record)),
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
