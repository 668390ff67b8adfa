"""Round-trip consistency: keep a generated query only when a judge ranks its own passage within the top k.

The judge is the base model as it is (InPars), or models trained from it on the generated pairs themselves
(Promptagator), which holds when the base does not know the documents' domain or language, exactly when
fine-tuning is needed. Promptagator's judge trains on every pair, so on a small corpus it learns a noisy pair
by heart and keeps it; here two judges each train on half the pairs and judge the other half (out of fold),
so no query is judged by a model that saw it. Each judge is a short run's model, deleted once it has judged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from embedforge.config.corpus import FilterConfig
from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.train import TrainConfig
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.stage_progress import encoding_progress
from embedforge.training.run import run_training, short_run
from embedforge.types import Splits

SEED = 0  # the same pairs always fall into the same halves


def round_trip(frame: pd.DataFrame, k: int, model_ref: str, revision: str | None, rows=None) -> pd.Series:
    """Whether the model ranks each query (of `rows`, default all) its own passage within the top k of every passage."""
    from sentence_transformers.util import semantic_search

    rows = frame.index if rows is None else rows
    model = load_model(model_ref, revision)
    passages = list(dict.fromkeys(frame["positive"]))
    index = {passage: i for i, passage in enumerate(passages)}
    with encoding_progress(model, "filter (round trip, encoding)", len(passages) + len(rows)):
        corpus = model.encode_document(passages, convert_to_tensor=True, show_progress_bar=False)
        queries = model.encode_query(list(frame.loc[rows, "anchor"]), convert_to_tensor=True, show_progress_bar=False)
    hits = semantic_search(queries, corpus, top_k=min(k, len(passages)))
    own = [index[p] for p in frame.loc[rows, "positive"]]
    return pd.Series([own[i] in {hit["corpus_id"] for hit in found} for i, found in enumerate(hits)], index=rows)


def kept_by_round_trip(config: FilterConfig, frame: pd.DataFrame, train: TrainConfig, out_dir: str) -> pd.Series:
    """Which pairs pass the round trip, judged as corpus.filter.round_trip_model says."""
    if config.round_trip_model == "base" or len(frame) < 4:  # too few pairs to train a judge on half of them
        return round_trip(frame, config.round_trip_k, train.base_model, train.base_model_revision)
    order = np.random.default_rng(SEED).permutation(len(frame))
    halves = [frame.index[order[: len(frame) // 2]], frame.index[order[len(frame) // 2 :]]]
    short = short_run(train, config.round_trip_steps, len(halves[0]))
    run_logger().info(
        "Filter: round trip judged out of fold: two models trained %d steps on half the pairs each (%d and %d), "
        "each judging the other half",
        *(short.args["max_steps"], len(halves[0]), len(halves[1])),
    )
    kept = []
    for n, (learned, judged) in enumerate([(halves[0], halves[1]), (halves[1], halves[0])]):
        judge = _train_judge(frame.loc[learned], short, Path(out_dir) / f"round-trip-{n}")
        try:
            kept.append(round_trip(frame, config.round_trip_k, judge, None, judged))
        finally:
            shutil.rmtree(Path(judge).parent)
    return pd.concat(kept).reindex(frame.index)


def _train_judge(pairs: pd.DataFrame, short: TrainConfig, folder: Path) -> str:
    """A short run of the recipe's own training from its base model, on these pairs; the model's folder."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs[["anchor", "positive"]].to_parquet(folder / "pairs.parquet")
    splits = Splits(train=str(folder / "pairs.parquet"), train_name="judge", train_kind="retrieval", evaluation={})
    return run_training(short, splits, EvaluateConfig(), folder).model_dir
