"""The CrossEncoderTrainer a rerank section describes: the run's training pairs with hard negatives mined by the
fine-tuned embedder, the loss by its library name, and the checkpoint chosen on the eval split's reranking."""

from __future__ import annotations

from pathlib import Path

import datasets
from sentence_transformers import util
from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments, losses
from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.rerank import RerankConfig
from embedforge.errors import EmbedforgeError
from embedforge.evaluators import build_evaluators, leaves_of
from embedforge.training.interrupt import StopOnCtrlC, TrainingInterrupted, stop_on_ctrl_c, stop_requested, stopped_by
from embedforge.training.progress import PrefectProgress
from embedforge.training.trainer import quiet, with_our_progress
from embedforge.types import Splits

SELECTION = "eval_rerank"  # the evaluator's name: its figures log as eval_rerank_ndcg@10


def mined_pairs(config: RerankConfig, splits: Splits, embedder, prompts: dict | None) -> datasets.Dataset:
    """Each training query with its positive and the embedder's own top-ranked wrong passages, as the loss reads
    them. Negatives come from the embedder's top_k: the passages the reranker will be given to reorder."""
    pairs = datasets.Dataset.from_parquet(splits.unmined or splits.train).select_columns(["anchor", "positive"])
    with quiet():
        mined = util.mine_hard_negatives(
            pairs,
            embedder,
            range_max=config.top_k,
            num_negatives=config.negatives,
            sampling_strategy="top",
            output_format=config.output_format,
            query_prompt=(prompts or {}).get("anchor"),
            corpus_prompt=(prompts or {}).get("positive"),
            verbose=False,
        )
    if not len(mined):
        raise EmbedforgeError(
            f"rerank: the embedder found no wrong passage in its top {config.top_k} for any training query; "
            "raise rerank.top_k"
        )
    return mined


def selection_evaluator(splits: Splits, evaluate: EvaluateConfig, embedder, top_k: int):
    """The eval split as the reranker will serve it: each query with the embedder's top_k passages, in its order;
    None without a retrieval eval split."""
    leaves = [
        leaf for e in build_evaluators(splits, "eval", evaluate) for leaf in leaves_of(e) if hasattr(leaf, "rankings")
    ]
    if not leaves:
        return None
    leaf = leaves[0]
    leaf(embedder)
    texts = dict(zip(leaf.corpus_ids, leaf.corpus))
    ranking = next(iter(leaf.rankings.values()))
    samples = [
        {
            "query": query,
            "positive": [texts[doc] for doc in leaf.relevant_docs[qid]],
            "documents": [texts[hit["corpus_id"]] for hit in sorted(hits, key=lambda hit: -hit["score"])[:top_k]],
        }
        for qid, query, hits in zip(leaf.queries_ids, leaf.queries, ranking)
    ]
    return CrossEncoderRerankingEvaluator(samples, always_rerank_positives=False, name=SELECTION, write_csv=False)


def reranker_args(config: RerankConfig, checkpoints: Path, selects: bool) -> CrossEncoderTrainingArguments:
    """The recipe's arguments; with an eval split, each epoch's checkpoint measured there and the best loaded."""
    selection = {
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "load_best_model_at_end": True,
        "metric_for_best_model": f"{SELECTION}_ndcg@10",
        "save_total_limit": 1,
    }
    args = {"report_to": "none", "save_strategy": "no", **(selection if selects else {})}
    try:
        return CrossEncoderTrainingArguments(output_dir=str(checkpoints), **(args | config.args))
    except (ValueError, ImportError) as exc:
        raise EmbedforgeError(f"rerank.args: {exc}") from exc


def make_reranker_trainer(reranker, config: RerankConfig, data: datasets.Dataset, evaluator, checkpoints: Path):
    loss = getattr(losses, config.loss)(reranker, **config.loss_args)
    trainer = CrossEncoderTrainer(
        model=reranker,
        args=reranker_args(config, checkpoints, evaluator is not None),
        train_dataset=data,
        loss=loss,
        evaluator=evaluator,
        callbacks=[PrefectProgress(), StopOnCtrlC()],
    )
    return with_our_progress(trainer)


def train_stoppably(trainer) -> None:
    """Train; Ctrl-C or SIGTERM stops at the next step, and nothing half-trained is saved as the reranker."""
    with stop_on_ctrl_c():
        trainer.train()
    if stop_requested():
        raise TrainingInterrupted(
            f"reranker training stopped on {stopped_by()} after step {trainer.state.global_step}; the embedder is "
            "saved, and the reranker trains again from the start"
        )
