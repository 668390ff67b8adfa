"""How far a long data stage is (chunk, generate, filter, mine): a line every tenth, and a progress artifact.

A line per batch would be hundreds of lines on a real corpus; a line per tenth, with the rate and the time left,
is what a person watching the terminal needs, and the progress artifact follows every step in the dashboard.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import contextmanager

from embedforge.logs import run_logger


class StageProgress:
    """`advance(done)` after each unit of work; it logs when `done` crosses another tenth of `total`."""

    def __init__(self, stage: str, total: int, unit: str) -> None:
        self.stage, self.total, self.unit = stage, max(total, 1), unit
        self.started, self.next_tenth = time.monotonic(), 1
        self.artifact = _artifact(f"{stage}: {unit} done (%)")

    def advance(self, done: int) -> None:
        if self.artifact:
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self.artifact, 100.0 * done / self.total)
        if done * 10 < self.next_tenth * self.total:
            return
        self.next_tenth = done * 10 // self.total + 1
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed else 0.0
        left = (self.total - done) / rate if rate else 0.0
        run_logger().info(
            "%s: %d of %d %s (%d%%), %.1f %s/s, %s left",
            *(self.stage, done, self.total, self.unit, 100 * done // self.total, rate, self.unit, _duration(left)),
        )


# Work done by task runs in this process, counted where it happens (a task run's worker thread) and read by the
# flow, which alone writes the lines and the artifact. A task run in another process (a remote Dask worker)
# finds no count here: its work shows when its task run ends.
_COUNTS: dict[str, int] = {}
_COUNTS_LOCK = threading.Lock()


@contextmanager
def shared_count():
    """A count task runs of this process add to (`add_to_count(token, n)`), read by `read_count(token)`."""
    token = uuid.uuid4().hex
    _COUNTS[token] = 0
    try:
        yield token
    finally:
        _COUNTS.pop(token, None)


def add_to_count(token: str, n: int) -> None:
    with _COUNTS_LOCK:
        if token in _COUNTS:
            _COUNTS[token] += n


def read_count(token: str) -> int:
    return _COUNTS.get(token, 0)


@contextmanager
def encoding_progress(model, stage: str, total: int):
    """The texts a model encodes inside the block, counted batch by batch (a forward hook), as the stage's progress.

    Filter and mine spend their time in the model's encode calls, of which the library's own bars are off.
    """
    progress = StageProgress(stage, total, "texts")
    done = 0

    def count(module, args, output) -> None:
        nonlocal done
        done = min(total, done + len(next(iter(args[0].values()))))
        progress.advance(done)

    handle = model.register_forward_hook(count)
    try:
        yield progress
    finally:
        handle.remove()


def _artifact(description: str):
    """A progress artifact in a flow or task run; none outside one (a unit test calling a stage's function)."""
    from prefect.artifacts import create_progress_artifact
    from prefect.context import FlowRunContext, TaskRunContext

    if not (FlowRunContext.get() or TaskRunContext.get()):
        return None
    return create_progress_artifact(0.0, description=description)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class QuietBatches(logging.Filter):
    """On the terminal, the per-batch "Finished in state Completed()" of generate's task runs are dropped: the stage's
    own line every tenth says how far it is. The dashboard keeps each batch's record, and a failure is shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        batch = getattr(record, "task_name", None) == "generate-queries"
        return not (batch and record.levelno < logging.WARNING)


def quiet_batches() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(isinstance(f, QuietBatches) for f in handler.filters):
            handler.addFilter(QuietBatches())
