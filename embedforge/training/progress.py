"""Training progress where the Prefect dashboard shows it: a progress artifact and the run log."""

from __future__ import annotations

import json
import time

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from embedforge.logs import run_logger

# Each update is a call to the API that the training step waits for: a few a minute is what the
# dashboard needs, however fast the steps are.
UPDATE_EVERY_S = 10.0


class PrefectProgress(TrainerCallback):
    """Training progress and losses where the dashboard shows them: a progress artifact and the run log."""

    def __init__(self):
        self.artifact_id = None
        self.updated = 0.0
        self.logger = run_logger()

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.logger.info("Training started: %d steps, %d epochs", state.max_steps, state.num_train_epochs)
            from prefect.artifacts import create_progress_artifact
            from prefect.context import TaskRunContext

            # Outside a task run (torchrun workers, plain scripts) Prefect would start a temporary server
            # of its own for the artifact; the run's own progress is reported by the launching task.
            if TaskRunContext.get():
                self.artifact_id = create_progress_artifact(0.0, description="Training progress (%)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.artifact_id and state.max_steps and time.monotonic() - self.updated >= UPDATE_EVERY_S:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact_id, 100.0 * state.global_step / state.max_steps)
            self.updated = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.logger.info(
                "step %d/%d: %s",
                state.global_step,
                state.max_steps,
                json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in logs.items()}),
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self.artifact_id:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact_id, 100.0)


class TrainingBar(ProgressCallback):
    """The trainer's progress bar without the dict it prints under itself at every log step.

    PrefectProgress logs the same figures as run log lines, which the terminal and the dashboard show.
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass
