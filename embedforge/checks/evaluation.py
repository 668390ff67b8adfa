"""Pre-run checks of the evaluate section: every metric a gate or the headline names is one the evaluators report.

The names come from sentence-transformers' evaluators themselves, built as a run builds them and run on
three rows with a stand-in model of a few dozen weights: when the library renames a metric, the check
follows it, with no list here to drift.
"""

from __future__ import annotations

import functools

import datasets

from embedforge.config.evaluate import GAIN_GATES, EvaluateConfig
from embedforge.errors import EmbedforgeError, did_you_mean
from embedforge.evaluators import dataset_evaluators, resolve_metric, run_evaluators
from embedforge.training.trainer import quiet

# Three rows of every standard column, in words the stand-in model's vocabulary holds.
SAMPLE = {
    "anchor": ["a b", "b c", "c a"],
    "positive": ["a", "b", "c"],
    "negative": ["c", "a", "b"],
    "sentence1": ["a b", "b c", "c a"],
    "sentence2": ["a", "c", "b"],
    "score": [0.9, 0.1, 0.5],
    "label": [1, 0, 1],
}


@functools.cache
def _stand_in_model(dimension: int, similarity: str):
    """A real SentenceTransformer of static word embeddings: what the evaluators need to report their metrics."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2, "c": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    module = StaticEmbedding(tokenizer, embedding_dim=dimension)
    return SentenceTransformer(modules=[module], similarity_fn_name=similarity, device="cpu")


def _sample(kind: str, negatives: bool = True) -> datasets.Dataset:
    retrieval = ["anchor", "positive", "negative"] if negatives else ["anchor", "positive"]
    wanted = {"retrieval": retrieval, "similarity": ["score"], "classification": ["label"]}
    texts = [] if kind == "retrieval" else ["sentence1", "sentence2"]
    return datasets.Dataset.from_dict({column: SAMPLE[column] for column in texts + wanted[kind]})


def metric_names(
    datasets_by_name: dict[str, str], config: EvaluateConfig, similarity: str = "cosine", negatives: bool = True
) -> list[str]:
    """Every metric key the test evaluators will report for these datasets ({evaluator name: kind}); triplet
    metrics only when the test data has negatives."""
    model = _stand_in_model(max(config.matryoshka_dims or [8]), similarity)
    evaluators = [
        evaluator
        for name, kind in datasets_by_name.items()
        for evaluator in dataset_evaluators(_sample(kind, negatives), kind, name, config)
    ]
    with quiet():
        metrics, _ = run_evaluators(model, evaluators)
    return list(metrics)


def check_metric_names(
    config: EvaluateConfig, datasets_by_name: dict[str, str], similarity: str = "cosine", negatives: bool = True
) -> list[tuple[str, str]]:
    """(field, problem) for every headline or gate metric the evaluators will not report."""
    asked = [("evaluate.headline", config.headline)] if config.headline else []
    asked += [(f"evaluate.gates.{name}", name) for name in config.gates if name not in GAIN_GATES]
    if not asked:
        return []
    known = dict.fromkeys(metric_names(datasets_by_name, config, similarity, negatives))
    short = [
        m for kind in set(datasets_by_name.values()) for m in metric_names({"": kind}, config, similarity, negatives)
    ]
    # What the evaluators would report with negatives and do not without: the triplet metrics.
    triplet = {} if negatives else dict.fromkeys(set(metric_names(datasets_by_name, config, similarity)) - set(known))
    problems = []
    for field, name in asked:
        try:
            resolve_metric(name, known)
        except EmbedforgeError:
            lacking = " (the test data has no negative column: no triplet metrics)" if _reports(name, triplet) else ""
            problems.append(
                (field, f"no evaluator reports {name!r}{lacking}" + did_you_mean(name, short + list(known)))
            )
    return problems


def _reports(name: str, metrics: dict) -> bool:
    try:
        resolve_metric(name, metrics)
    except EmbedforgeError:
        return False
    return True
