"""The baselines a fine-tuned embedder must beat: BM25 (bm25s, stemmed and without stopwords in the recipe's
language) and a hybrid of BM25 and the embedder by reciprocal rank fusion.

Both rank the test split's own corpus for its own queries, and the retrieval evaluator's own metric code scores
the rankings, so a BM25 figure reads exactly like the model's figure beside it.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict

import numpy as np

from embedforge.generation import UNSPACED

# ISO 639-1 codes (the model card's `language`) to the Snowball stemmers PyStemmer ships.
STEMMERS = {
    "ar": "arabic", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german", "el": "greek", "en": "english",
    "es": "spanish", "et": "estonian", "eu": "basque", "fa": "persian", "fi": "finnish", "fr": "french",
    "ga": "irish", "hi": "hindi", "hu": "hungarian", "hy": "armenian", "id": "indonesian", "it": "italian",
    "lt": "lithuanian", "ne": "nepali", "nl": "dutch", "no": "norwegian", "pl": "polish", "pt": "portuguese",
    "ro": "romanian", "ru": "russian", "sr": "serbian", "sv": "swedish", "ta": "tamil", "tr": "turkish",
    "yi": "yiddish",
}  # fmt: skip
# The stopword lists bm25s ships, by the same codes.
STOPWORDS = {"da", "de", "en", "es", "fr", "it", "ko", "nl", "no", "pt", "ru", "sv", "tr", "zh"}
UNSPACED_RUN = re.compile(f"[{UNSPACED}]+")
RRF_K = 60  # Cormack, Clarke and Büttcher (2009): the constant of reciprocal rank fusion, as Elasticsearch uses


def _bm25s():
    import bm25s

    # Importing bm25s sets its logger to DEBUG, which puts a line per index built on the terminal.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def _bigrams(text: str) -> str:
    """Chinese and Japanese runs as overlapping character pairs, the usual BM25 terms of a script written without
    spaces; otherwise a whole clause would be one term, and no query would share a term with any passage."""
    return UNSPACED_RUN.sub(lambda run: " ".join(a + b for a, b in zip(run[0], run[0][1:])) or run[0], text)


def _tokens(texts: list[str], language: str) -> list[list[str]]:
    import Stemmer

    bm25s = _bm25s()

    stemmer = Stemmer.Stemmer(STEMMERS[language]) if language in STEMMERS else None
    stopwords = language if language in STOPWORDS else None
    texts = [_bigrams(text) for text in texts]
    return bm25s.tokenize(texts, stopwords=stopwords, stemmer=stemmer, return_ids=False, show_progress=False)


def bm25_rankings(queries: list[str], corpus: dict[str, str], language: str, top_k: int) -> list[list[dict]]:
    """Each query's top_k passages by BM25, as the retrieval evaluator lists them: {"corpus_id", "score"}."""
    ids = list(corpus)
    index = _bm25s().BM25()
    index.index(_tokens(list(corpus.values()), language), show_progress=False)
    found, scores = index.retrieve(_tokens(queries, language), k=min(top_k, len(ids)), show_progress=False)
    return [
        [{"corpus_id": ids[doc], "score": float(score)} for doc, score in zip(docs, row) if score > 0]
        for docs, row in zip(found, scores)
    ]


def fused(*rankings: list[list[dict]], top_k: int) -> list[list[dict]]:
    """Reciprocal rank fusion, query by query: each passage scores the sum of 1 / (RRF_K + its rank) in each list."""
    out = []
    for lists in zip(*rankings):
        scores: dict[str, float] = defaultdict(float)
        for ranked in lists:
            for rank, hit in enumerate(sorted(ranked, key=lambda hit: -hit["score"]), start=1):
                scores[hit["corpus_id"]] += 1.0 / (RRF_K + rank)
        best = sorted(scores.items(), key=lambda item: -item[1])[:top_k]
        out.append([{"corpus_id": corpus_id, "score": score} for corpus_id, score in best])
    return out


def baseline_figures(leaves: list, language: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """BM25's and the hybrid's figures on retrieval evaluators the fine-tuned model was just measured with (their
    `rankings`), keyed as the model's figures of each score function: ({"bm25", "hybrid": {key: figure}}, the same
    with a figure per query). BM25 ranks alike for every score function; the hybrid fuses BM25 with each."""
    figures = {"bm25": {}, "hybrid": {}}
    per_query = {"bm25": {}, "hybrid": {}}
    ranked: dict[tuple, tuple[list, list[dict]]] = {}  # Matryoshka dims share queries and corpus: BM25 runs once
    for leaf in leaves:
        top_k = max(*leaf.mrr_at_k, *leaf.ndcg_at_k, *leaf.accuracy_at_k, *leaf.precision_recall_at_k, *leaf.map_at_k)
        texts = (tuple(leaf.queries), tuple(leaf.corpus_ids), top_k)
        if texts not in ranked:
            bm25 = bm25_rankings(leaf.queries, dict(zip(leaf.corpus_ids, leaf.corpus)), language, top_k)
            ranked[texts] = bm25, leaf.each_query(bm25)
        bm25, bm25_each = ranked[texts]
        for function, dense in leaf.rankings.items():
            hybrid_each = leaf.each_query(fused(bm25, dense, top_k=top_k))
            for name, each in (
                ("bm25", leaf.keyed(function, bm25_each)),
                ("hybrid", leaf.keyed(function, hybrid_each)),
            ):
                per_query[name] |= each
                figures[name] |= {key: float(np.mean(values)) for key, values in each.items()}
    return figures, per_query


def baseline_line(finetuned: float, bm25: float, hybrid: float, over) -> str:
    """The one line the log and the terminal summary give the baselines: BM25, hybrid, and the margin over BM25."""
    margin = f"{finetuned - bm25:+.4f}" + (f", {over.signed}" if over else "")
    return f"keyword search on the same queries: BM25 {bm25:.4f}, hybrid {hybrid:.4f}; fine-tuned minus BM25 {margin}"
