"""Data-parallel training (`train.devices` > 1): one torchrun process per device, each running this module.

torchrun and its ranks are this process's to end. They run in a process group of their own, which this process
stops as a whole when it is asked to stop (Ctrl-C, or the SIGTERM a worker sends when a run is cancelled from
the dashboard) and kills when it dies (Linux: the parent-death signal). A rank that outlived its run would hold
the GPU's memory and fail the next run on that worker (PrefectHQ/prefect#17593).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.train import TrainConfig
from embedforge.errors import EmbedforgeError
from embedforge.logs import run_logger
from embedforge.training.interrupt import TrainingInterrupted, stop_on_ctrl_c, stop_requested, stopped_by
from embedforge.training.run import run_training, trained_model, where_it_resumes
from embedforge.types import Splits, TrainedModel


def launch(config: TrainConfig, splits: Splits, evaluate: EvaluateConfig, run_dir: Path) -> TrainedModel:
    """Run torchrun with this module on every device; the ranks read their settings from train_spec.json."""
    spec_path = run_dir / "train_spec.json"
    spec = {"config": config.model_dump(), "splits": splits.model_dump(), "evaluate": evaluate.model_dump()}
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={config.devices}"]
    command += ["-m", __name__, str(spec_path)]
    run_logger().info("Launching data-parallel training on %d devices: %s", config.devices, " ".join(command))
    with stop_on_ctrl_c():
        returncode = _run_as_a_group(command)
    if stop_requested():
        raise TrainingInterrupted(f"data-parallel training stopped on {stopped_by()}{where_it_resumes(run_dir)}")
    if returncode != 0:
        raise EmbedforgeError(
            f"train: data-parallel training exited with status {returncode}; "
            f"checkpoints are kept in {run_dir}/checkpoints"
        )
    return trained_model(config, run_dir)


def _die_with_parent() -> None:
    """In the child before torchrun starts: SIGTERM when the process that started it dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _run_as_a_group(command: list[str], grace: float = 10.0) -> int:
    """torchrun in a process group of its own, waited on until it ends or a stop is asked for; then the whole
    group (torchrun and every rank) gets SIGTERM, and SIGKILL after `grace` s. Returns torchrun's exit status."""
    process = subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        while process.poll() is None and not stop_requested():
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if process.poll() is None:  # asked to stop, or this process is failing: nothing of it may stay behind
            _end_group(process, grace)
    return process.returncode


def _end_group(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the group, SIGKILL to what is left of it after `grace` s: ranks can outlive torchrun itself."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(process):
            time.sleep(0.2)
    process.wait()


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap torchrun itself when it has ended: a zombie leader keeps the group "alive"
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


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
