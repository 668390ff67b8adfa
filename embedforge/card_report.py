"""embedforge's own part of a model card: the gain over the base beside keyword search, and each thing the run did
beyond training (general sets, rounds, merge, backends, reranker, documents), its data and its recipe."""

from __future__ import annotations

from embedforge.config.corpus import CorpusConfig
from embedforge.data_reports import FilterReport
from embedforge.recipe import Recipe
from embedforge.reports import (
    BASELINES,
    corpus_markdown,
    doubt_markdown,
    export_markdown,
    gain_table,
    general_markdown,
    merge_markdown,
    mining_markdown,
    rerank_markdown,
    rounds_markdown,
    trials_markdown,
)
from embedforge.types import Metrics, RunRecord, Splits, TrainedModel

SYNTHETIC_TEST = (
    " **Its queries were made from the documents, not written by people**: they show whether the model learned the "
    "documents, not how it serves real searches. Label 50-100 real queries as `split.test_file` for that."
)
KEYWORD_NOTE = (
    "BM25: keyword search (bm25s, stemmed and without stopwords in `evaluate.language`) over the same corpus for the "
    "same queries; hybrid: BM25's and the fine-tuned model's rankings fused by reciprocal rank (k = 60)."
)


def gain_markdown(metrics: Metrics) -> str:
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
    loads = _loads("SentenceTransformer", f'"{where}"', model.backends)
    folder = f'snapshot_download("{where}") + "/reranker"' if record.repo_id else f'"{where}/reranker"'
    loads += _loads("CrossEncoder", folder, model.reranker_backends)
    how = "Each loads with sentence-transformers' backends, which need optimum (`[onnx]` or `[openvino]` extras):"
    imports = ["from sentence_transformers import CrossEncoder, SentenceTransformer"]
    if record.repo_id and model.reranker_backends:
        imports.insert(0, "from huggingface_hub import snapshot_download")
    usage = [how, "", "```python", *imports, "", *loads, "```", ""]
    reranker = ["", "The reranker's (texts/s: (query, passage) pairs scored per second):", ""]
    reranker += [export_markdown(model.reranker_backends, recipe.export.max_drop)] if model.reranker_backends else []
    return [
        "### Serving Backends",
        "",
        export_markdown(model.backends, recipe.export.max_drop),
        *(reranker if model.reranker_backends else []),
        *(usage if loads else []),
    ]


def _loads(cls: str, where: str, trials: list) -> list[str]:
    """How each backend kept is loaded, as sentence-transformers' own backends load it."""
    return [
        f'model = {cls}({where}, backend="{t.backend.split("-")[0]}", model_kwargs={{"file_name": "{t.file}"}})'
        for t in trials[1:]
        if t.kept
    ]


def _reranker(recipe: Recipe, metrics: Metrics, record: RunRecord) -> list[str]:
    if not metrics.rerank:
        return []
    where = record.repo_id or f"{recipe.push.local_dir or 'path/to/release'}/latest"
    usage = [
        "The release holds the reranker under `reranker/` (its own card there); search with both:",
        "",
        "```python",
        "from huggingface_hub import snapshot_download",
        "from sentence_transformers import CrossEncoder, SentenceTransformer",
        "",
        f'folder = snapshot_download("{where}")' if record.repo_id else f'folder = "{where}"',
        'embedder, reranker = SentenceTransformer(folder), CrossEncoder(folder + "/reranker")',
        "```",
        "",
    ]
    return ["### Reranker", "", rerank_markdown(metrics.rerank), "", *(usage if metrics.rerank.kept else [])]


def _made_from(config: CorpusConfig | None, report: FilterReport | None) -> list[str]:
    """How the training pairs were made from documents: the method, the model and prompt it used, the counts."""
    if config is None or report is None:
        return []
    how = {
        "llm": f"queries written by `{config.generate.llm.model}` at {config.generate.llm.base_url} for each chunk"
        if config.generate.llm
        else "",
        "lead": "the first sentence of each chunk as the query, the rest of the chunk as the passage (lead)",
        "crop": "two independent random crops of each chunk (Contriever)",
        "inverse_cloze": "a sentence of each chunk as the query, the rest of the chunk as the passage (inverse cloze)",
    }[config.generate.method]
    lines = ["### Training Data from Documents", "", f"The training pairs were made from `{config.path}`: {how}."]
    lines += ["", corpus_markdown(report)]
    if config.generate.llm:
        lines += ["Prompt:", "", "```", config.generate.llm.prompt.strip(), "```", ""]
    return lines


def fine_tuning_report(metrics: Metrics, record: RunRecord, splits: Splits, sections: list[str]) -> str:
    """embedforge's own section: gain over the base, `sections` (general ability, training data from documents),
    mining, overlap, data fingerprints and the recipe."""
    gain = "Both models measured with the same evaluators on the held-out test split, which neither training nor "
    gain += "model selection saw." + (SYNTHETIC_TEST if record.synthetic_test else "")
    lines = ["## Fine-tuning Report", "", "### Gain over the Base Model", "", gain, "", gain_markdown(metrics), ""]
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


def sections(recipe: Recipe, model: TrainedModel, metrics: Metrics, record: RunRecord) -> list[str]:
    """What this run did beyond training, each when it did it."""
    general = _general(recipe, metrics)
    return (
        general
        + _rounds(model)
        + _merge(recipe, model)
        + _backends(recipe, model, record)
        + _reranker(recipe, metrics, record)
        + _made_from(recipe.corpus, record.corpus)
    )
