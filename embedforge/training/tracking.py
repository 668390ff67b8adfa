"""Experiment tracking beside the Prefect run: the trainer's TensorBoard logs and MLflow run, linked from the dashboard.

``train.args.report_to`` turns them on under the trainer's own names; both work offline. TensorBoard
logs go into the run directory; MLflow writes to ``MLFLOW_TRACKING_URI`` (a server, or a local store).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from embedforge.artifacts import create_link_artifact, create_markdown_artifact
from embedforge.logs import run_logger


def _reports(args: dict) -> set[str]:
    value = args.get("report_to", "none")
    return {value} if isinstance(value, str) else set(value)


@contextlib.contextmanager
def tracking_env(args: dict, run_dir: Path):
    """TensorBoard logs inside the run directory, unless the operator chose a folder (TENSORBOARD_LOGGING_DIR)."""
    chosen = {}
    if "tensorboard" in _reports(args) | ({"all"} & _reports(args)) and "TENSORBOARD_LOGGING_DIR" not in os.environ:
        chosen["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    os.environ.update(chosen)
    try:
        yield
    finally:
        for name in chosen:
            os.environ.pop(name, None)


def _mlflow_run(run_name: str):
    import mlflow

    found = mlflow.search_runs(
        filter_string=f"attributes.run_name = '{run_name}'", search_all_experiments=True, output_format="list"
    )
    return mlflow.get_tracking_uri(), (found[0] if found else None)


def link_tracking(args: dict, run_dir: Path, run_name: str, artifact_key: str | None) -> None:
    """Say in the log and the dashboard where this run's training curves are."""
    reports = _reports(args)
    logs = Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or run_dir / "tensorboard")
    if "tensorboard" in reports and logs.is_dir():
        run_logger().info("TensorBoard logs: %s (tensorboard --logdir %s)", logs, logs)
        if artifact_key:
            create_markdown_artifact(
                f"## TensorBoard\n\nTraining curves of this run: `tensorboard --logdir {logs}`\n",
                key=f"{artifact_key}-tensorboard",
            )
    if "mlflow" not in reports:
        return
    uri, run = _mlflow_run(run_name)
    if run is None:
        run_logger().warning("MLflow: no run named %s at %s", run_name, uri)
        return
    run_logger().info("MLflow run %s (%s) at %s", run.info.run_id, run_name, uri)
    if artifact_key and uri.startswith("http"):
        link = f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
        create_link_artifact(link, link_text=f"MLflow run {run_name}", key=f"{artifact_key}-mlflow")
    elif artifact_key:
        create_markdown_artifact(
            f"## MLflow\n\nRun `{run.info.run_id}` ({run_name}) in `{uri}`: open it with "
            f"`mlflow ui --backend-store-uri {uri}`\n",
            key=f"{artifact_key}-mlflow",
        )
