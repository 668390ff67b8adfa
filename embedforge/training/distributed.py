"""Data-parallel training (`train.devices` > 1): one torchrun process per device, each running this module."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.train import TrainConfig
from embedforge.errors import EmbedforgeError
from embedforge.logs import run_logger
from embedforge.training.run import run_training, trained_model
from embedforge.types import Splits, TrainedModel


def launch(config: TrainConfig, splits: Splits, evaluate: EvaluateConfig, run_dir: Path) -> TrainedModel:
    """Run torchrun with this module on every device; the ranks read their settings from train_spec.json."""
    spec_path = run_dir / "train_spec.json"
    spec = {"config": config.model_dump(), "splits": splits.model_dump(), "evaluate": evaluate.model_dump()}
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={config.devices}"]
    command += ["-m", __name__, str(spec_path)]
    run_logger().info("Launching data-parallel training on %d devices: %s", config.devices, " ".join(command))
    completed = subprocess.run(command)
    if completed.returncode != 0:
        raise EmbedforgeError(
            f"train: data-parallel training exited with status {completed.returncode}; "
            f"checkpoints are kept in {run_dir}/checkpoints"
        )
    return trained_model(config, run_dir)


def _rank_main(spec_file: Path) -> None:
    """One rank: train with the spec's settings, then leave the process group cleanly."""
    import torch

    # Under torchrun there is no Prefect run context: log to the worker's output instead.
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING, format=f"%(asctime)s rank {rank} %(message)s"
    )
    spec = json.loads(spec_file.read_text())
    run_training(
        TrainConfig.model_validate(spec["config"]),
        Splits.model_validate(spec["splits"]),
        EvaluateConfig.model_validate(spec["evaluate"]),
        spec_file.parent,
    )
    # Tear the process group down before exit: left to interpreter shutdown, a rank can abort
    # ("terminate called without an active exception") and torchrun reports the run as failed.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _rank_main(Path(sys.argv[1]))
