"""Rerank: train a cross-encoder beside the fine-tuned embedder, on the run's training pairs with the embedder's
own mistakes as hard negatives.

Side effect: writes ``<run>/reranker/`` (the CrossEncoder and the library's card), with its checkpoints under
``<run>/reranker-checkpoints/`` while it trains. The folder appears whole, by a rename, so a run directory that
holds it already trains none.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from huggingface_hub import constants as hub_constants
from prefect import task

from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.rerank import RerankConfig
from embedforge.logs import run_logger
from embedforge.models import load_model
from embedforge.reranking import RERANKER_LIBRARY_CARD, has_head, load_reranker
from embedforge.training.reranker import make_reranker_trainer, mined_pairs, selection_evaluator, train_stoppably
from embedforge.types import Splits, TrainedModel


def _say_head(config: RerankConfig) -> None:
    if has_head(config.base_model) is False:
        run_logger().info(
            "rerank.base_model %s has no classification head: the library adds one with random weights, so the base "
            "reranker is measured as an untrained head and the fine-tuned one learns it from the run's pairs",
            config.base_model,
        )


def _base_reranker(config: RerankConfig, train_name: str):
    seed = config.args.get("seed", 42)
    reranker = load_reranker(config.base_model, config.base_model_revision, config.max_length, seed)
    reranker.model_card_data.local_files_only = hub_constants.HF_HUB_OFFLINE  # the card asks the Hub nothing offline
    reranker.model_card_data.train_datasets = [{"name": train_name}]
    return reranker


# No retries: as for the embedder, a failed training is a bug or a bad recipe.
@task(name="train-reranker", retries=0)
def train_reranker(config: RerankConfig, evaluate: EvaluateConfig, model: TrainedModel, splits: Splits) -> TrainedModel:
    """Fine-tune rerank.base_model as a CrossEncoder; with an eval split, the best epoch there is kept."""
    out, checkpoints = Path(model.run_dir) / "reranker", Path(model.run_dir) / "reranker-checkpoints"
    if out.is_dir():
        run_logger().info("%s already holds this run's reranker; not training it again", out)
        return model.model_copy(update={"reranker_dir": str(out)})
    _say_head(config)
    embedder = load_model(model.model_dir, max_seq_length=model.max_seq_length)
    data = mined_pairs(config, splits, embedder, evaluate.prompts)
    evaluator = selection_evaluator(splits, evaluate, embedder, config.top_k)
    reranker = _base_reranker(config, splits.train_name)
    run_logger().info(
        "Training the reranker with %s on %d rows (%d hard negatives per query, from the embedder's top %d)%s",
        config.loss,
        len(data),
        config.negatives,
        config.top_k,
        "; the best epoch on the eval split is kept" if evaluator else "",
    )
    train_stoppably(make_reranker_trainer(reranker, config, data, evaluator, checkpoints))
    saving = out.with_name("reranker-saving")
    shutil.rmtree(saving, ignore_errors=True)  # half-saved by an interrupted attempt
    reranker.save_pretrained(str(saving))
    # The library's card, for the card stage to add to (and render again on a resume).
    shutil.copy(saving / "README.md", out.with_name(RERANKER_LIBRARY_CARD))
    saving.rename(out)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the chosen weights are in the reranker folder
    run_logger().info("Reranker saved to %s", out)
    return model.model_copy(update={"reranker_dir": str(out)})
