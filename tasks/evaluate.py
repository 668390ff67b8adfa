"""Evaluate: the recipe's evaluators on the test split, for the base and the fine-tuned model.

Side effect: writes the metrics JSON (and publishes the gain table to the Prefect dashboard).
The same evaluator builder serves training-time evaluation on the eval split and the champion's
measurement; the card names the library's own evaluators (``card_evaluators``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path

import datasets
from prefect import task
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sentence_transformers.sentence_transformer.evaluation import (
    BinaryClassificationEvaluator,
    EmbeddingSimilarityEvaluator,
    InformationRetrievalEvaluator,
    SequentialEvaluator,
    TripletEvaluator,
)

from tasks.errors import EmbedforgeError
from tasks.logs import run_logger
from tasks.models import TrainedModel, load_model
from tasks.split import Splits

# The seed cards report every similarity function for pair data, not only the model's own.
ALL_SIMILARITIES = ["cosine", "euclidean", "manhattan", "dot"]


def check_matryoshka_dims(dims: list[int] | None) -> None:
    """Largest first: the first dim is the full-size one that the headline metric and the gates read."""
    dims = dims or []
    if any(a <= b for a, b in zip(dims, dims[1:])) or any(d <= 0 for d in dims):
        raise ValueError(f"matryoshka_dims: {dims} must be positive and strictly descending, largest first")


class EvaluateConfig(BaseModel):
    """Which numbers are measured, and which ones a model must reach to be published."""

    model_config = ConfigDict(extra="forbid")

    matryoshka_dims: list[int] | None = Field(
        None,
        description="Report retrieval metrics at each of these dimensions (default: the MatryoshkaLoss dims, if any).",
    )
    distractors: bool = Field(
        False,
        description="Add the training split's passages to the retrieval corpus, "
        "so the test queries must also beat them.",
    )
    batch_size: int = Field(32, gt=0, description="Encoding batch size for evaluation.")
    prompts: dict[str, str] | None = Field(
        None,
        description="Prompts retrieval evaluation encodes with: anchor (queries) and positive (passages) "
        "(default: train.args.prompts, so a model trained with a query prompt is measured with it).",
    )
    headline: str | None = Field(
        None,
        description="Metric used by gates and the champion/challenger check (default: the first evaluator's "
        "primary metric).",
    )

    gates: dict[str, float] = Field(
        default_factory=dict,
        description="Minimum values, e.g. {cosine_ndcg@10: 0.6, gain: 0.0}; 'gain' is the headline's fine-tuned "
        "minus base.",
    )

    @model_validator(mode="after")
    def _descending(self) -> EvaluateConfig:
        check_matryoshka_dims(self.matryoshka_dims)
        return self


class EvaluatorInfo(BaseModel):
    """One leaf evaluator as metrics.json lists it: name, class, primary metric and its metric keys."""

    name: str
    evaluator: str
    primary_metric: str
    metrics: list[str]


class Metrics(BaseModel):
    """What evaluate hands on: both models' test-split metrics, flat, and the headline metric's key."""

    headline: str
    base: dict[str, float]
    finetuned: dict[str, float]
    evaluators: list[EvaluatorInfo]
    test_key: str | None = Field(None, description="measurement_key of the figures; None: not known.")

    @property
    def gain(self) -> float:
        return self.finetuned[self.headline] - self.base[self.headline]


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
        evaluators = [MatryoshkaRetrievalEvaluator(dims)]
    else:
        evaluators = [InformationRetrievalEvaluator(**common, name=name)]
    if "negative" in data.column_names:
        evaluators.append(
            TripletEvaluator(
                _column(data, "anchor"),
                _column(data, "positive"),
                _column(data, "negative"),
                name=f"{name}_triplet" if name else "triplet",
                batch_size=config.batch_size,
            )
        )
    return evaluators


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


def build_evaluators(splits: Splits, part: str, config: EvaluateConfig) -> list:
    """The evaluators that measure one part ("eval" or "test") of every evaluation dataset."""
    distractors = _column(datasets.Dataset.from_parquet(splits.train), "positive") if config.distractors else []
    evaluators = []
    for name, (kind, path) in splits.parts(part).items():
        data = datasets.Dataset.from_parquet(path)
        if kind == "retrieval":
            evaluators.extend(_retrieval_evaluators(data, name, config, distractors))
        else:
            evaluators.append(_pair_evaluator(data, kind, name, config))
    return evaluators


def card_evaluators(splits: Splits, config: EvaluateConfig) -> list:
    """The test split's evaluators as the model card names them: the library's own classes, one per Matryoshka dim.

    They encode nothing here; the card only reads their names, classes and descriptions.
    """
    card = []
    for evaluator in build_evaluators(splits, "test", config):
        if isinstance(evaluator, MatryoshkaRetrievalEvaluator):
            card.extend(
                InformationRetrievalEvaluator(
                    queries=dict(zip(leaf.queries_ids, leaf.queries)),
                    corpus=dict(zip(leaf.corpus_ids, leaf.corpus)),
                    relevant_docs=leaf.relevant_docs,
                    name=leaf.name,
                    truncate_dim=leaf.truncate_dim,
                    batch_size=leaf.batch_size,
                )
                for leaf in evaluator.evaluators
            )
        else:
            card.append(evaluator)
    return card


def leaf_results(evaluator, metrics: dict) -> list[tuple[object, dict]]:
    """Split one evaluator's metrics per leaf evaluator (one per Matryoshka dim), as the model card lists them."""
    leaves = evaluator.evaluators if isinstance(evaluator, SequentialEvaluator) else [evaluator]
    out = []
    for leaf in leaves:
        prefix = f"{leaf.name}_" if leaf.name else ""
        out.append((leaf, {k: v for k, v in metrics.items() if k.startswith(prefix)}))
    return out


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
                evaluator=type(leaf).__name__,
                primary_metric=leaf.primary_metric,
                metrics=sorted(subset),
            )
            for leaf, subset in leaf_results(evaluator, metrics)
        ]
    return flat, leaves


def test_split_evaluators(splits: Splits, config: EvaluateConfig) -> list:
    """The test split's evaluators, built once for every model measured on it."""
    evaluators = build_evaluators(splits, "test", config)
    if not evaluators:
        raise EmbedforgeError("evaluate: no test split to evaluate on")
    return evaluators


def measure(
    ref: str, evaluators: list, revision: str | None = None, max_seq_length: int | None = None
) -> tuple[dict[str, float], list[EvaluatorInfo]]:
    """One model's test-split metrics; the base, fine-tuned and published models are measured alike."""
    metrics, leaves = run_evaluators(load_model(ref, revision, max_seq_length), evaluators)
    run_logger().info("Evaluated %s on the test split", ref)
    return metrics, leaves


def resolve_metric(name: str, metrics: dict) -> str:
    """Find a metric by its full key or by its unprefixed name (cosine_ndcg@10 -> dnd_validation_cosine_ndcg@10)."""
    if name in metrics:
        return name
    matches = [key for key in metrics if key.endswith("_" + name)]
    if len(matches) == 1:
        return matches[0]
    hint = f"it matches {matches}" if matches else f"known metrics: {', '.join(sorted(metrics))}"
    raise EmbedforgeError(f"evaluate: metric {name!r} is not unique or unknown; {hint}")


# What each kind of evaluator reports, per similarity function, before the dataset (and dim) prefix.
RETRIEVAL_METRICS = [f"{m}@{k}" for m in ("accuracy", "precision", "recall") for k in (1, 3, 5, 10)]
RETRIEVAL_METRICS += ["ndcg@10", "mrr@10", "map@100"]
PAIR_METRICS = {
    "similarity": [f"{c}_{fn}" for c in ("pearson", "spearman") for fn in ALL_SIMILARITIES],
    "classification": [
        f"{fn}_{m}"
        for fn in ALL_SIMILARITIES
        for m in ("accuracy", "accuracy_threshold", "f1", "f1_threshold", "precision", "recall", "ap", "mcc")
    ],
}


def metric_names(datasets_by_name: dict[str, str], config: EvaluateConfig) -> list[str]:
    """Every metric key the test evaluators will report for these datasets ({evaluator name: kind})."""
    names = []
    for name, kind in datasets_by_name.items():
        prefix = f"{name}_" if name else ""
        if kind != "retrieval":
            names += [prefix + metric for metric in PAIR_METRICS[kind]]
            continue
        dims = [f"dim_{d}_" for d in config.matryoshka_dims or []] or [""]
        names += [prefix + dim + f"{fn}_{m}" for dim in dims for fn in ALL_SIMILARITIES for m in RETRIEVAL_METRICS]
        names += [f"{prefix}triplet_{fn}_accuracy" for fn in ALL_SIMILARITIES]
    return names


def check_metric_names(config: EvaluateConfig, datasets_by_name: dict[str, str]) -> list[tuple[str, str]]:
    """(field, problem) for every headline or gate metric the evaluators will not report."""
    known = dict.fromkeys(metric_names(datasets_by_name, config))
    asked = [("evaluate.headline", config.headline)] if config.headline else []
    asked += [(f"evaluate.gates.{name}", name) for name in config.gates if name != "gain"]
    problems = []
    for field, name in asked:
        try:
            resolve_metric(name, known)
        except EmbedforgeError:
            short = [m for kind in set(datasets_by_name.values()) for m in metric_names({"": kind}, config)]
            close = difflib.get_close_matches(name, short + list(known), n=1)
            problems.append(
                (field, f"no evaluator reports {name!r}" + (f"; did you mean {close[0]}?" if close else ""))
            )
    return problems


def gain_table(metrics: Metrics) -> list[dict]:
    """Rows of metric, base, fine-tuned and their difference."""
    base, tuned = metrics.base, metrics.finetuned
    return [
        {
            "metric": key,
            "base": round(base[key], 4),
            "fine-tuned": round(tuned[key], 4),
            "delta": round(tuned[key] - base[key], 4),
        }
        for key in tuned
        if key in base
    ]


def measurement_key(config: EvaluateConfig, splits: Splits, max_seq_length: int | None) -> str:
    """What a model's test-split figures depend on besides the model: the test data, evaluator settings, max_seq_length.

    Two figures with the same key were measured alike, so one can stand for a new measurement.
    """
    files = [(name, path) for name, (_, path) in splits.parts("test").items()]
    if config.distractors:
        files.append(("distractors", splits.train))
    settings = config.model_dump(mode="json", exclude={"gates", "headline"})
    digest = hashlib.sha256()
    digest.update(json.dumps([max_seq_length, settings], sort_keys=True).encode())
    for name, path in files:
        digest.update(name.encode())
        with open(path, "rb") as content:
            digest.update(hashlib.file_digest(content, "sha256").digest())
    return digest.hexdigest()[:16]


def _base_metrics_key(context, parameters) -> str:
    """The base model as it is today, measured alike on the same test split."""
    key = measurement_key(parameters["config"], parameters["splits"], parameters["model"].max_seq_length)
    identity = f"{parameters['base_model_id']}|{key}"
    return f"base-metrics-{hashlib.sha256(identity.encode()).hexdigest()}"


@task(name="measure-base-model", cache_key_fn=_base_metrics_key, persist_result=True)
def measure_base_model(config: EvaluateConfig, model: TrainedModel, splits: Splits, base_model_id: str) -> dict:
    """The base model's test-split metrics, cached: a retrain on the same test split does not measure it again."""
    base, _ = measure(
        model.base_model, test_split_evaluators(splits, config), model.base_model_revision, model.max_seq_length
    )
    return base


@task(name="evaluate-model")
def evaluate_model(
    config: EvaluateConfig,
    model: TrainedModel,
    splits: Splits,
    base: dict[str, float],
    out_path: str,
) -> Metrics:
    """Measure the fine-tuned model as the base was measured; write both to out_path."""
    finetuned, leaves = measure(
        model.model_dir, test_split_evaluators(splits, config), max_seq_length=model.max_seq_length
    )
    headline = resolve_metric(config.headline or leaves[0].primary_metric, finetuned)
    test_key = measurement_key(config, splits, model.max_seq_length)
    metrics = Metrics(headline=headline, base=base, finetuned=finetuned, evaluators=leaves, test_key=test_key)
    run_logger().info("%s: base %.4f, fine-tuned %.4f", headline, base[headline], finetuned[headline])
    Path(out_path).write_text(metrics.model_dump_json(indent=2))
    return metrics
