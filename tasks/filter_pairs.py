"""Filter: keep the generated pairs worth training on; count what each filter dropped.

Side effect: writes ``<dir>/pairs.parquet``, the training data of a corpus recipe. Filters run
cheapest first: length bounds, exact duplicates, near duplicates, then round-trip consistency (the base
model must rank a query's own passage within the top k of all passages: Promptagator, InPars).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from prefect import task

from embedforge.artifacts import create_markdown_artifact
from embedforge.config.corpus import FilterConfig
from embedforge.config.train import TrainConfig
from embedforge.data_reports import FilterReport, GenerationReport
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.reports import corpus_markdown
from embedforge.stage_progress import encoding_progress


def _fold(query: str) -> str:
    return re.sub(r"\s+", " ", query.casefold()).strip(" ?.!")


def _shingles(query: str) -> set:
    words = _fold(query).split()
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)} or {tuple(words)}


def near_duplicates(queries: list[str], threshold: float) -> list[bool]:
    """For each query, whether its word-trigram overlap (Jaccard) with an earlier kept one reaches the threshold."""
    kept: list[set] = []
    flags = []
    for query in queries:
        shingles = _shingles(query)
        duplicate = any(len(shingles & seen) / len(shingles | seen) >= threshold for seen in kept)
        flags.append(duplicate)
        if not duplicate:
            kept.append(shingles)
    return flags


def round_trip(frame: pd.DataFrame, k: int, model_ref: str, revision: str | None) -> pd.Series:
    """Whether the model ranks each query's own passage within the top k of every passage."""
    from sentence_transformers.util import semantic_search

    model = load_model(model_ref, revision)
    passages = list(dict.fromkeys(frame["positive"]))
    index = {passage: i for i, passage in enumerate(passages)}
    with encoding_progress(model, "filter (round trip)", len(passages) + len(frame)):
        corpus = model.encode_document(passages, convert_to_tensor=True, show_progress_bar=False)
        queries = model.encode_query(list(frame["anchor"]), convert_to_tensor=True, show_progress_bar=False)
    hits = semantic_search(queries, corpus, top_k=min(k, len(passages)))
    own = [index[p] for p in frame["positive"]]
    return pd.Series([own[i] in {hit["corpus_id"] for hit in found} for i, found in enumerate(hits)], index=frame.index)


def drop_warning(config: FilterConfig, generated: int, dropped: dict[str, int]) -> str | None:
    """When the filters dropped more than half of the pairs: the one that dropped most, why, and what to change."""
    if not generated or sum(dropped.values()) <= generated / 2:
        return None
    name, count = max(dropped.items(), key=lambda item: item[1])
    why = {
        "round_trip": f"the base model did not rank a query's own passage in its top {config.round_trip_k} of the "
        "corpus, as a model that does not know the documents' language or domain does, which is when fine-tuning "
        "helps most; raise corpus.filter.round_trip_k, or set it to null",
        "near_duplicate": "queries too alike to an earlier one; raise corpus.filter.near_duplicate toward 1, or set "
        "it to null",
        "duplicate": "the same query made for several chunks; set corpus.generate.queries_per_chunk lower, or "
        "corpus.filter.dedupe: false",
        "length": f"queries shorter than {config.min_query_chars} or longer than {config.max_query_chars} characters; "
        "change corpus.filter.min_query_chars or max_query_chars",
    }[name]
    kept = generated - sum(dropped.values())
    return f"only {kept} of {generated} generated pairs kept: {name.replace('_', ' ')} dropped {count}: {why}"


def _apply(frame: pd.DataFrame, keep: pd.Series, name: str, dropped: dict) -> pd.DataFrame:
    dropped[name] = int((~keep).sum())
    return frame[keep]


def _filtered(config: FilterConfig, frame: pd.DataFrame, train: TrainConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """The pairs every filter kept, cheapest first, and how many each dropped."""
    dropped: dict[str, int] = {}
    lengths = frame["anchor"].str.len()
    frame = _apply(frame, lengths.between(config.min_query_chars, config.max_query_chars), "length", dropped)
    if config.dedupe:
        frame = _apply(frame, ~frame["anchor"].map(_fold).duplicated(), "duplicate", dropped)
    if config.near_duplicate:
        flags = near_duplicates(list(frame["anchor"]), config.near_duplicate)
        frame = _apply(frame, ~pd.Series(flags, index=frame.index), "near_duplicate", dropped)
    if config.round_trip_k and len(frame):
        kept = round_trip(frame, config.round_trip_k, train.base_model, train.base_model_revision)
        frame = _apply(frame, kept, "round_trip", dropped)
    return frame, dropped


@task(name="filter-pairs")
def filter_pairs(
    config: FilterConfig, generated: GenerationReport, train: TrainConfig, out_dir: str, artifact_key: str | None = None
) -> FilterReport:
    """Drop queries out of length bounds, duplicates and those the base model cannot find their passage by."""
    frame, dropped = _filtered(config, pd.read_parquet(generated.path), train)
    path = Path(out_dir) / "pairs.parquet"
    frame.reset_index(drop=True).to_parquet(path)
    warning = drop_warning(config, generated.pairs, dropped)
    report = FilterReport(
        path=str(path),
        generated=generated.pairs,
        kept=len(frame),
        dropped=dropped,
        generation=generated,
        warning=warning,
    )
    run_logger().info("Kept %d of %d generated pairs; dropped %s", report.kept, report.generated, dropped)
    if warning:
        run_logger().warning("Filter: %s", warning)
    if artifact_key:
        samples = frame.sample(min(3, len(frame)), random_state=0)[["anchor", "positive"]].to_dict("records")
        create_markdown_artifact(corpus_markdown(report, samples), key=artifact_key)
    return report
