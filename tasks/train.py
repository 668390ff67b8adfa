"""Train: fine-tune the base model with SentenceTransformerTrainer and save it.

Side effect: writes ``<run>/checkpoints/`` and ``<run>/model/`` (the training itself is
embedforge.training.run). Runs in-process, or under torchrun when ``devices > 1``.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.train import TrainConfig
from embedforge.logs import run_logger
from embedforge.training import distributed
from embedforge.training.run import run_training, trained_model
from embedforge.training.tracking import link_tracking, tracking_env
from embedforge.types import Splits, TrainedModel


# No retries: a failed training is a bug or bad recipe, and a blind retry burns GPU hours.
@task(name="train-model", retries=0)
def train_model(
    config: TrainConfig, splits: Splits, evaluate: EvaluateConfig, run_dir: str, artifact_key: str | None = None
) -> TrainedModel:
    """Fine-tune and save the model in the run directory; evaluate settings serve evaluation during training.

    A run directory whose model was saved whole is not trained again: a retry or `embedforge resume`
    after a later stage failed goes straight on to evaluation.
    """
    run = Path(run_dir)
    trained = trained_model(config, run)
    if Path(trained.card_data).exists():  # written after the model, so the model is complete
        run_logger().info("%s already holds this run's trained model; not training again", trained.model_dir)
        return trained
    with tracking_env(config.args, run):
        if config.devices > 1:
            trained = distributed.launch(config, splits, evaluate, run)
        else:
            trained = run_training(config, splits, evaluate, run)
    link_tracking(config.args, run, config.args.get("run_name") or f"{run.parent.name}-{run.name}", artifact_key)
    return trained
