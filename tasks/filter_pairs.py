"""Filter: keep the generated pairs worth training on; count what each filter dropped.

Side effect: writes ``<dir>/pairs.parquet``, the training data of a corpus recipe. Filters run
cheapest first: length bounds, exact duplicates, near duplicates, then round-trip consistency
(embedforge/round_trip.py): a judge must rank a query's own passage within the top k of all passages.
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
from embedforge.errors import EmbedforgeError
from embedforge.logs import run_logger
from embedforge.reports import corpus_markdown
from embedforge.round_trip import kept_by_round_trip


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


def _round_trip_why(config: FilterConfig) -> str:
    if config.round_trip_model == "base":
        return (
            f"the base model did not rank a query's own passage in its top {config.round_trip_k} of the corpus, as a "
            "model that does not know the documents' language or domain does, which is when fine-tuning helps most; "
            "set corpus.filter.round_trip_model: trained (a judge trained on the pairs themselves), raise "
            "corpus.filter.round_trip_k, or set it to null"
        )
    return (
        f"models trained on the other half of the generated pairs did not rank a query's own passage in its top "
        f"{config.round_trip_k} of the corpus: most queries do not single out their passage (many alike chunks, "
        "or queries too general); "
        "read the sample pairs, raise corpus.filter.round_trip_k or corpus.filter.round_trip_steps, or set "
        "round_trip_k to null"
    )


def drop_warning(config: FilterConfig, generated: int, dropped: dict[str, int]) -> str | None:
    """When the filters dropped more than half of the pairs: the one that dropped most, why, and what to change."""
    if not generated or sum(dropped.values()) <= generated / 2:
        return None
    name, count = max(dropped.items(), key=lambda item: item[1])
    why = {
        "round_trip": _round_trip_why(config),
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
    keep = keep.astype(bool)  # an empty Series has no dtype of its own, and frame[] would read it as columns
    dropped[name] = int((~keep).sum())
    return frame[keep.to_numpy()]


def _filtered(
    config: FilterConfig, frame: pd.DataFrame, train: TrainConfig, out_dir: str
) -> tuple[pd.DataFrame, dict[str, int]]:
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
        frame = _apply(frame, kept_by_round_trip(config, frame, train, out_dir), "round_trip", dropped)
    return frame, dropped


@task(name="filter-pairs")
def filter_pairs(
    config: FilterConfig, generated: GenerationReport, train: TrainConfig, out_dir: str, artifact_key: str | None = None
) -> FilterReport:
    """Drop queries out of length bounds, duplicates and those the base model cannot find their passage by."""
    frame, dropped = _filtered(config, pd.read_parquet(generated.path), train, out_dir)
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
    if not report.kept:
        raise EmbedforgeError(f"filter: no pair left to train on: {warning or 'generate made none'}")
    return report
