"""The reranker: a sentence-transformers CrossEncoder that reorders the embedder's top results.

A two-stage figure is the embedder's own ranking of the test split with its top_k reordered by the reranker and
the rest left in place, scored by the retrieval evaluator's own metric code, as BM25 is: it reads exactly like
the embedder's figure beside it.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from embedforge.errors import EmbedforgeError
from embedforge.evaluators import leaves_of
from embedforge.models import resolve_model_ref
from embedforge.training.trainer import quiet
from embedforge.types import BackendTrial

# sentence-transformers' card of the reranker as trained, kept beside it for the card stage to add to.
RERANKER_LIBRARY_CARD = "reranker-library-card.md"


def has_head(ref: str) -> bool | None:
    """Does the model have a trained classification head (a reranker), or would the library add a random one?
    None when its config cannot be read here (a Hub id offline)."""
    config = Path(resolve_model_ref(ref)) / "config.json"
    if not config.is_file():
        return None
    architectures = json.loads(config.read_text()).get("architectures") or []
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def load_reranker(
    ref: str, revision: str | None = None, max_length: int | None = None, seed: int = 42, device: str | None = None
):
    """A CrossEncoder with one score per pair, on `device` (default: the GPU when there is one). A head the library
    adds to a plain encoder is random: seeded, so the base reranker measured and the one training starts from are
    the same model."""
    from sentence_transformers.cross_encoder import CrossEncoder
    from transformers import set_seed

    set_seed(seed)
    try:
        with quiet():  # the library's report of the head it added: said once, in the run's own words
            return CrossEncoder(
                resolve_model_ref(ref), revision=revision, num_labels=1, max_length=max_length, device=device
            )
    except OSError as exc:
        raise EmbedforgeError(f"rerank.base_model {ref!r} could not be loaded: {exc}") from exc


def headline_leaf(evaluators: list, headline: str):
    """(the retrieval leaf that measured the headline, its score function): what the reranker reorders."""
    for evaluator in evaluators:
        for leaf in leaves_of(evaluator):
            prefix = f"{leaf.name}_" if leaf.name else ""
            for function in getattr(leaf, "rankings", None) or {}:
                if headline.startswith(f"{prefix}{function}_") and headline in (leaf.per_query or {}):
                    return leaf, function
    raise EmbedforgeError(
        f"rerank: the headline {headline} is not a retrieval metric of the test split; set evaluate.headline to one "
        "(e.g. cosine_ndcg@10)"
    )


def _pairs(leaf, ranking: list[list[dict]], top_k: int) -> list[list[tuple[str, str]]]:
    texts = dict(zip(leaf.corpus_ids, leaf.corpus))
    return [
        [(query, texts[hit["corpus_id"]]) for hit in _ordered(hits)[:top_k]]
        for query, hits in zip(leaf.queries, ranking)
    ]


def _ordered(hits: list[dict]) -> list[dict]:
    return sorted(hits, key=lambda hit: -hit["score"])


def reranked(reranker, leaf, ranking: list[list[dict]], top_k: int, batch_size: int = 64) -> list[list[dict]]:
    """Each query's top_k passages reordered by the reranker's scores, the rest after them as they were."""
    pairs = _pairs(leaf, ranking, top_k)
    flat = [pair for query in pairs for pair in query]
    scores = iter(reranker.predict(flat, batch_size=batch_size, show_progress_bar=False).tolist()) if flat else iter(())
    out = []
    for hits in ranking:
        hits = _ordered(hits)
        head = sorted(((next(scores), hit["corpus_id"]) for hit in hits[:top_k]), key=lambda pair: -pair[0])
        order = [corpus_id for _, corpus_id in head] + [hit["corpus_id"] for hit in hits[top_k:]]
        out.append([{"corpus_id": corpus_id, "score": float(len(order) - n)} for n, corpus_id in enumerate(order)])
    return out


def reranked_queries(reranker, leaf, function: str, headline: str, top_k: int) -> list[float]:
    """Each test query's headline after the reranker reorders the top_k of the leaf's ranking by `function`."""
    return leaf.keyed(function, leaf.each_query(reranked(reranker, leaf, leaf.rankings[function], top_k)))[headline]


def ms_per_query(reranker, leaf, ranking: list[list[dict]], top_k: int, queries: int = 32) -> float:
    """The median time to score one query's top_k passages in one batch, after a warm-up query: serving latency."""
    pairs = [query for query in _pairs(leaf, ranking, top_k)[: queries + 1] if query]
    if not pairs:
        return 0.0
    times = []
    for query in pairs:
        start = time.perf_counter()
        reranker.predict(query, batch_size=top_k, show_progress_bar=False)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times[1:] or times)


def rerank_line(rerank) -> str:
    """The terminal summary's line: the two-stage figure beside the embedder's, its latency, and the verdict."""
    figures = rerank.figures
    over = rerank.intervals.get("over_embedder")
    gain = f"{rerank.two_stage - figures['embedder']:+.4f}" + (f", {over.signed}" if over else "")
    verdict = "in the release" if rerank.kept else f"left out of the release ({rerank.reason})"
    return (
        f"two-stage, top {rerank.top_k}: embedder + fine-tuned reranker {rerank.two_stage:.4f} ({gain} over the "
        f"embedder alone; base reranker {figures['base reranker']:.4f}), {rerank.ms_per_query:.1f} ms per query on "
        f"CPU; reranker {verdict}"
    )


class TwoStageBench:
    """The test split's two-stage measurement set up once, to judge a reranker's serving backends: the PyTorch
    embedder's ranking, and the (query, passage) pairs each backend is timed on."""

    def __init__(self, leaf, function: str, headline: str, top_k: int, batch_size: int, limit: int = 512):
        self.leaf, self.function, self.headline, self.top_k, self.batch_size = (
            leaf,
            function,
            headline,
            top_k,
            batch_size,
        )
        self.pairs = [pair for query in _pairs(leaf, leaf.rankings[function], top_k) for pair in query][:limit]

    @classmethod
    def on_test_split(cls, embedder, evaluators: list, headline: str, top_k: int, batch_size: int) -> TwoStageBench:
        from embedforge.evaluators import run_evaluators

        run_evaluators(embedder, evaluators)
        return cls(*headline_leaf(evaluators, headline), headline, top_k, batch_size)

    @property
    def metric(self) -> str:
        return f"{self.headline} (two-stage, top {self.top_k})"

    def pairs_per_s(self, reranker) -> float:
        """The median of three timed passes, after a warm-up batch, as the embedder's backends are timed."""
        reranker.predict(self.pairs[: self.batch_size], batch_size=self.batch_size, show_progress_bar=False)
        rates = []
        for _ in range(3):
            start = time.perf_counter()
            reranker.predict(self.pairs, batch_size=self.batch_size, show_progress_bar=False)
            rates.append(len(self.pairs) / (time.perf_counter() - start))
        return statistics.median(rates)

    def trial(self, backend: str, file: str, reranker, figure: float | None = None) -> BackendTrial:
        """One reranker measured: its two-stage figure (unless given) and its speed, in (query, passage) pairs/s."""
        if figure is None:
            queries = reranked_queries(reranker, self.leaf, self.function, self.headline, self.top_k)
            figure = sum(queries) / len(queries)
        speed = self.pairs_per_s(reranker)
        return BackendTrial(backend=backend, file=file, metric=self.metric, figure=figure, texts_per_s=speed)
