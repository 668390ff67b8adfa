"""Evaluate: the recipe's evaluators on the test split, for the base and the fine-tuned model.

Side effect: writes the metrics JSON (and publishes the gain table to the Prefect dashboard).
The same evaluator builder serves training-time evaluation on the eval split.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field
from sentence_transformers.sentence_transformer.evaluation import (
    BinaryClassificationEvaluator,
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
    SequentialEvaluator,
    TripletEvaluator,
)

from tasks.errors import EmbedforgeError
from tasks.models import load_model


# The seed cards report every similarity function for pair data, not only the model's own.
ALL_SIMILARITIES = ["cosine", "euclidean", "manhattan", "dot"]


class EvaluateConfig(BaseModel):
    """Which numbers are measured, and which ones a model must reach to be published."""

    model_config = ConfigDict(extra="forbid")

    matryoshka_dims: list[int] | None = Field(None, description="Report retrieval metrics at each of these dimensions (default: the MatryoshkaLoss dims, if any).")
    distractors: bool = Field(False, description="Add the training split's passages to the retrieval corpus, so the test queries must also beat them.")
    batch_size: int = Field(32, gt=0, description="Encoding batch size for evaluation.")
    headline: str | None = Field(None, description="Metric used by gates and the champion/challenger check (default: the first evaluator's primary metric).")
    gates: dict[str, float] = Field(default_factory=dict, description="Minimum values, e.g. {cosine_ndcg@10: 0.6, gain: 0.0}; 'gain' is the headline's fine-tuned minus base.")


class TruncatedRetrievalEvaluator(InformationRetrievalEvaluator):
    """An InformationRetrievalEvaluator that slices full-size embeddings from a shared cache.

    Matryoshka dims are prefixes of one embedding, so encoding once and truncating per
    dim gives the same numbers as re-encoding at every dim, at 1/len(dims) of the cost.
    """

    cache: dict | None = None

    def embed_inputs(self, model, sentences, encode_fn_name=None, prompt_name=None, prompt=None, **kwargs):
        if self.cache is None:
            return super().embed_inputs(model, sentences, encode_fn_name, prompt_name, prompt, **kwargs)
        key = (encode_fn_name, prompt_name, prompt, hashlib.sha1("\x00".join(sentences).encode()).hexdigest())
        if key not in self.cache:
            dim, self.truncate_dim = self.truncate_dim, None
            try:
                self.cache[key] = super().embed_inputs(model, sentences, encode_fn_name, prompt_name, prompt, **kwargs)
            finally:
                self.truncate_dim = dim
        return self.cache[key][..., : self.truncate_dim]


class MatryoshkaRetrievalEvaluator(SequentialEvaluator):
    """Retrieval metrics at every Matryoshka dim, each text encoded once per call."""

    def __init__(self, evaluators: list[TruncatedRetrievalEvaluator]):
        super().__init__(evaluators)

    def __call__(self, model, output_path=None, epoch=-1, steps=-1):
        cache: dict = {}
        for evaluator in self.evaluators:
            evaluator.cache = cache
        try:
            results = super().__call__(model, output_path, epoch, steps)
        finally:
            for evaluator in self.evaluators:
                evaluator.cache = None
        # The full-size dim leads; its primary metric stands for the group (not "sequential_score").
        results.pop("sequential_score", None)
        self.primary_metric = self.evaluators[0].primary_metric
        return results


def _column(data: datasets.Dataset, name: str) -> list:
    return list(data[name])  # datasets 5 returns a lazy Column; evaluators index and concatenate lists


def _retrieval_inputs(data: datasets.Dataset, distractors: list[str]):
    """Queries are the anchors, the corpus every passage of the split (plus distractors), relevant = their pairs."""
    corpus: dict[str, str] = {}
    ids: dict[str, str] = {}
    for passage in _column(data, "positive") + distractors:
        if passage not in ids:
            ids[passage] = f"d{len(ids)}"
            corpus[ids[passage]] = passage
    queries: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for anchor, positive in zip(_column(data, "anchor"), _column(data, "positive")):
        qid = query_ids.setdefault(anchor, f"q{len(query_ids)}")
        queries[qid] = anchor
        relevant.setdefault(qid, set()).add(ids[positive])
    return queries, corpus, relevant


def _retrieval_evaluators(data, name: str, config: EvaluateConfig, distractors: list[str], encode_once: bool):
    queries, corpus, relevant = _retrieval_inputs(data, distractors)
    common = dict(queries=queries, corpus=corpus, relevant_docs=relevant, batch_size=config.batch_size)
    if config.matryoshka_dims:
        prefix = f"{name}_" if name else ""
        per_dim = TruncatedRetrievalEvaluator if encode_once else InformationRetrievalEvaluator
        dims = [per_dim(**common, name=f"{prefix}dim_{dim}", truncate_dim=dim) for dim in config.matryoshka_dims]
        if encode_once:
            yield MatryoshkaRetrievalEvaluator(dims)
        else:
            yield from dims
    else:
        yield InformationRetrievalEvaluator(**common, name=name)
    if "negative" in data.column_names:
        yield TripletEvaluator(_column(data, "anchor"), _column(data, "positive"), _column(data, "negative"), name=f"{name}_triplet" if name else "triplet", batch_size=config.batch_size)


def build_evaluators(splits: dict, part: str, config: EvaluateConfig, encode_once: bool = True) -> list:
    """Evaluators for one part ("eval" or "test") of every evaluation dataset in the split result.

    ``encode_once=False`` gives the library's own evaluators, one per Matryoshka dim, for the model
    card to name and describe (it encodes nothing); measuring uses the encode-once wrapper.
    """
    distractors = _column(datasets.Dataset.from_parquet(splits["train"]), "positive") if config.distractors else []
    evaluators = []
    for name, entry in splits["evaluation"].items():
        if part not in entry:
            continue
        data = datasets.Dataset.from_parquet(entry[part])
        if entry["kind"] == "retrieval":
            evaluators.extend(_retrieval_evaluators(data, name, config, distractors, encode_once))
        elif entry["kind"] == "similarity":
            evaluators.append(EmbeddingSimilarityEvaluator(_column(data, "sentence1"), _column(data, "sentence2"), _column(data, "score"), name=name, batch_size=config.batch_size,
                                                          similarity_fn_names=ALL_SIMILARITIES, main_similarity="cosine"))
        else:
            evaluators.append(BinaryClassificationEvaluator(_column(data, "sentence1"), _column(data, "sentence2"), _column(data, "label"), name=name, batch_size=config.batch_size, similarity_fn_names=ALL_SIMILARITIES))
    return evaluators


def leaf_results(evaluator, metrics: dict) -> list[tuple[object, dict]]:
    """Split one evaluator's metrics per leaf evaluator (one per Matryoshka dim), as the model card lists them."""
    leaves = evaluator.evaluators if isinstance(evaluator, SequentialEvaluator) else [evaluator]
    out = []
    for leaf in leaves:
        prefix = f"{leaf.name}_" if leaf.name else ""
        out.append((leaf, {k: v for k, v in metrics.items() if k.startswith(prefix)}))
    return out


def run_evaluators(model, evaluators: list) -> tuple[dict, list[dict]]:
    """Return all metrics, flat, and one entry per leaf evaluator (name, class, primary metric, keys)."""
    flat: dict[str, float] = {}
    leaves = []
    for evaluator in evaluators:
        metrics = evaluator(model)
        flat.update(metrics)
        for leaf, subset in leaf_results(evaluator, metrics):
            leaves.append({"name": leaf.name, "class": type(leaf).__name__, "primary_metric": leaf.primary_metric, "metrics": sorted(subset)})
    return flat, leaves


def resolve_metric(name: str, metrics: dict) -> str:
    """Find a metric by its full key or by its unprefixed name (cosine_ndcg@10 -> dnd_validation_cosine_ndcg@10)."""
    if name in metrics:
        return name
    matches = [key for key in metrics if key.endswith("_" + name)]
    if len(matches) == 1:
        return matches[0]
    hint = f"it matches {matches}" if matches else f"known metrics: {', '.join(sorted(metrics))}"
    raise EmbedforgeError(f"evaluate: metric {name!r} is not unique or unknown; {hint}")


def gain_table(metrics: dict) -> list[dict]:
    """Rows of metric, base, fine-tuned and their difference."""
    base, tuned = metrics["base"], metrics["finetuned"]
    return [
        {"metric": key, "base": round(base[key], 4), "fine-tuned": round(tuned[key], 4), "delta": round(tuned[key] - base[key], 4)}
        for key in tuned
        if key in base and isinstance(tuned[key], (int, float))
    ]


@task(name="evaluate-model")
def evaluate_model(config: EvaluateConfig, models: dict[str, str], splits: dict, out_path: str,
                   max_seq_length: int | None = None, artifact_key: str | None = None) -> dict:
    """Measure each model ({label: path or Hub id}) with the same test-split evaluators; write them to out_path."""
    logger = get_run_logger()
    evaluators = build_evaluators(splits, "test", config)
    if not evaluators:
        raise EmbedforgeError("evaluate: no test split to evaluate on")
    result: dict = {}
    for label, ref in models.items():
        model = load_model(ref)
        if max_seq_length:
            model.max_seq_length = max_seq_length
        result[label], result["evaluators"] = run_evaluators(model, evaluators)
        logger.info("Evaluated %s model (%s) on the test split", label, ref)
    result["headline"] = resolve_metric(config.headline or result["evaluators"][0]["primary_metric"], result[label])
    for label in models:
        logger.info("%s %s = %.4f", label, result["headline"], result[label][result["headline"]])
    Path(out_path).write_text(json.dumps(result, indent=2))
    if artifact_key and {"base", "finetuned"} <= set(models):
        create_table_artifact(gain_table(result), key=artifact_key, description=f"Test-split metrics, base vs fine-tuned; headline {result['headline']}")
    return result


@task(name="check-quality-gate")
def check_quality_gate(config: EvaluateConfig, metrics: dict, model_dir: str) -> None:
    """Stop the run before anything is published when a metric misses its minimum; the model stays on disk."""
    tuned, failures = metrics["finetuned"], []
    for name, minimum in config.gates.items():
        if name == "gain":
            key = metrics["headline"]
            value = tuned[key] - metrics["base"][key]
            name = f"gain in {key}"
        else:
            value = tuned[resolve_metric(name, tuned)]
        if value < minimum:
            failures.append(f"{name} = {value:.4f} < {minimum} (short by {minimum - value:.4f})")
    if failures:
        raise EmbedforgeError(f"quality gate failed: {'; '.join(failures)}. Nothing was pushed; the model is kept at {model_dir}")
    if config.gates:
        get_run_logger().info("Quality gate passed: %s", ", ".join(config.gates))
