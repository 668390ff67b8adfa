"""The evaluators a model is measured with: sentence-transformers' own, built from the splits and the evaluate section.

One builder serves every measurement: the base, fine-tuned and published models on the test split,
training-time evaluation on the eval split, and the names the model card and the metric checks read.
"""

from __future__ import annotations

import datasets
from sentence_transformers.sentence_transformer.evaluation import (
    BinaryClassificationEvaluator,
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
    SequentialEvaluator,
    TripletEvaluator,
)

from embedforge.config.evaluate import EvaluateConfig
from embedforge.errors import EmbedforgeError
from embedforge.figures import EvaluatorInfo, Measurement
from embedforge.logs import run_logger
from embedforge.matryoshka import MatryoshkaRetrievalEvaluator, TruncatedRetrievalEvaluator
from embedforge.models import load_model
from embedforge.types import Splits
from embedforge.uncertainty import PerQueryRetrievalEvaluator

# The seed cards report every similarity function for pair data, not only the model's own.
ALL_SIMILARITIES = ["cosine", "euclidean", "manhattan", "dot"]


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


def _retrieval_evaluators(data, name: str, config: EvaluateConfig, distractors: list[str]) -> list:
    """Retrieval metrics to measure: every Matryoshka dim from one encoding, and triplets when there are negatives."""
    queries, corpus, relevant = _retrieval_inputs(data, distractors)
    prompts = config.prompts or {}
    common = dict(
        queries=queries,
        corpus=corpus,
        relevant_docs=relevant,
        batch_size=config.batch_size,
        query_prompt=prompts.get("anchor"),
        corpus_prompt=prompts.get("positive"),
    )
    if config.matryoshka_dims:
        prefix = f"{name}_" if name else ""
        dims = [
            TruncatedRetrievalEvaluator(**common, name=f"{prefix}dim_{dim}", truncate_dim=dim)
            for dim in config.matryoshka_dims
        ]
        return [MatryoshkaRetrievalEvaluator(dims)]
    return [PerQueryRetrievalEvaluator(**common, name=name)]


def _triplet_evaluator(data, name: str, config: EvaluateConfig) -> TripletEvaluator:
    texts = [_column(data, column) for column in ("anchor", "positive", "negative")]
    return TripletEvaluator(*texts, name=f"{name}_triplet" if name else "triplet", batch_size=config.batch_size)


def _pair_evaluator(data, kind: str, name: str, config: EvaluateConfig):
    pairs = dict(
        sentences1=_column(data, "sentence1"),
        sentences2=_column(data, "sentence2"),
        name=name,
        batch_size=config.batch_size,
        similarity_fn_names=ALL_SIMILARITIES,
    )
    if kind == "similarity":
        return EmbeddingSimilarityEvaluator(**pairs, scores=_column(data, "score"), main_similarity="cosine")
    return BinaryClassificationEvaluator(**pairs, labels=_column(data, "label"))


def dataset_evaluators(data: datasets.Dataset, kind: str, name: str, config: EvaluateConfig, distractors=()) -> list:
    """The evaluators of one evaluation dataset of this kind, named after it."""
    if kind != "retrieval":
        return [_pair_evaluator(data, kind, name, config)]
    evaluators = _retrieval_evaluators(data, name, config, list(distractors))
    if "negative" in data.column_names:
        evaluators.append(_triplet_evaluator(data, name, config))
    return evaluators


def build_evaluators(splits: Splits, part: str, config: EvaluateConfig) -> list:
    """The evaluators that measure one part ("eval" or "test") of every evaluation dataset."""
    distractors = _column(datasets.Dataset.from_parquet(splits.train), "positive") if config.distractors else []
    evaluators = []
    for name, (kind, path) in splits.parts(part).items():
        evaluators += dataset_evaluators(datasets.Dataset.from_parquet(path), kind, name, config, distractors)
    return evaluators


def general_evaluators(splits: Splits, config: EvaluateConfig) -> dict[str, list]:
    """Each evaluate.general set's evaluators: the whole set as a test set, without the domain's distractors."""
    return {
        name: dataset_evaluators(datasets.Dataset.from_parquet(path), "retrieval", name, config)
        for name, path in splits.general.items()
    }


def general_keys(general: dict[str, list], leaves: list[EvaluatorInfo]) -> dict[str, list[str]]:
    """{general set: its metric keys, its primary metric first}, from a measurement's leaves (general sets last)."""
    counts = {name: sum(len(leaves_of(e)) for e in evaluators) for name, evaluators in general.items()}
    rest = leaves[len(leaves) - sum(counts.values()) :]
    keys = {}
    for name, count in counts.items():
        own, rest = rest[:count], rest[count:]
        metrics = [key for leaf in own for key in leaf.metrics]
        keys[name] = [own[0].primary_metric] + [key for key in metrics if key != own[0].primary_metric]
    return keys


def card_evaluators(splits: Splits, config: EvaluateConfig) -> list:
    """The test split's evaluators as the model card names them: the library's own classes, one per Matryoshka dim.

    They encode nothing here; the card only reads their names, classes and descriptions.
    """
    card = []
    for evaluator in test_split_evaluators(splits, config):
        if isinstance(evaluator, InformationRetrievalEvaluator | MatryoshkaRetrievalEvaluator):
            card.extend(_library_retrieval(leaf) for leaf in leaves_of(evaluator))
        else:
            card.append(evaluator)
    return card


def _library_retrieval(leaf: InformationRetrievalEvaluator) -> InformationRetrievalEvaluator:
    """The library's own class for a retrieval evaluator of ours (per-query figures, shared embeddings)."""
    return InformationRetrievalEvaluator(
        queries=dict(zip(leaf.queries_ids, leaf.queries)),
        corpus=dict(zip(leaf.corpus_ids, leaf.corpus)),
        relevant_docs=leaf.relevant_docs,
        name=leaf.name,
        truncate_dim=leaf.truncate_dim,
        batch_size=leaf.batch_size,
    )


def leaves_of(evaluator) -> list:
    """The evaluators that report metrics of their own: one per Matryoshka dim, or the evaluator itself."""
    return evaluator.evaluators if isinstance(evaluator, SequentialEvaluator) else [evaluator]


def leaf_results(evaluator, metrics: dict) -> list[tuple[object, dict]]:
    """Split one evaluator's metrics per leaf evaluator (one per Matryoshka dim), as the model card lists them."""
    out = []
    for leaf in leaves_of(evaluator):
        prefix = f"{leaf.name}_" if leaf.name else ""
        out.append((leaf, {k: v for k, v in metrics.items() if k.startswith(prefix)}))
    return out


def library_class(evaluator) -> str:
    """The sentence-transformers class an evaluator of ours extends: what a reader can look up."""
    return next(c.__name__ for c in type(evaluator).__mro__ if c.__module__.startswith("sentence_transformers"))


def run_evaluators(model, evaluators: list) -> tuple[dict[str, float], list[EvaluatorInfo]]:
    """Return all metrics, flat, and one entry per leaf evaluator."""
    flat: dict[str, float] = {}
    leaves = []
    for evaluator in evaluators:
        metrics = evaluator(model)
        flat.update(metrics)
        leaves += [
            EvaluatorInfo(
                name=leaf.name,
                evaluator=library_class(leaf),
                primary_metric=leaf.primary_metric,
                metrics=sorted(subset),
            )
            for leaf, subset in leaf_results(evaluator, metrics)
        ]
    return flat, leaves


def test_split_evaluators(splits: Splits, config: EvaluateConfig) -> list:
    """The test split's evaluators, then the general sets', built once for every model measured on them."""
    evaluators = build_evaluators(splits, "test", config)
    if not evaluators:
        raise EmbedforgeError("evaluate: no test split to evaluate on")
    return evaluators + [e for group in general_evaluators(splits, config).values() for e in group]


def per_query_of(evaluators: list) -> dict[str, list[float]]:
    """{metric: its figure per query} of the retrieval leaves of the evaluators just run."""
    return {
        key: values
        for evaluator in evaluators
        for leaf in leaves_of(evaluator)
        for key, values in (getattr(leaf, "per_query", None) or {}).items()
    }


def choice_figure(model, evaluators: list, headline: str | None) -> tuple[str, float, list[float] | None]:
    """(metric, figure, figure per query) of the headline a choice is made on: evaluate.headline, or the first
    leaf's primary metric."""
    figures, leaves = run_evaluators(model, evaluators)
    metric = resolve_metric(headline or leaves[0].primary_metric, figures)
    return metric, figures[metric], per_query_of(evaluators).get(metric)


def measure(ref: str, evaluators: list, revision: str | None = None, max_seq_length: int | None = None) -> Measurement:
    """One model's test-split metrics; the base, fine-tuned and published models are measured alike."""
    metrics, leaves = run_evaluators(load_model(ref, revision, max_seq_length), evaluators)
    run_logger().info("Evaluated %s on the test split", ref)
    return Measurement(figures=metrics, leaves=leaves, per_query=per_query_of(evaluators))


def headline_of(config: EvaluateConfig, measured: Measurement, general: dict[str, list[str]]) -> str:
    """The headline's full key: the recipe's, or the first evaluator's primary metric, among the domain's figures."""
    outside = {key for keys in general.values() for key in keys}
    domain = {key: value for key, value in measured.figures.items() if key not in outside}
    return resolve_metric(config.headline or measured.leaves[0].primary_metric, domain)


def resolve_metric(name: str, metrics: dict) -> str:
    """Find a metric by its full key or by its unprefixed name (cosine_ndcg@10 -> dnd_validation_cosine_ndcg@10)."""
    if name in metrics:
        return name
    matches = [key for key in metrics if key.endswith("_" + name)]
    if len(matches) == 1:
        return matches[0]
    hint = f"it matches {matches}" if matches else f"known metrics: {', '.join(sorted(metrics))}"
    raise EmbedforgeError(f"evaluate: metric {name!r} is not unique or unknown; {hint}")
