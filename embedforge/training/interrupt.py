"""Ctrl-C during training: stop at the next step boundary, checkpoint when the recipe saves checkpoints.

The terminal sends SIGINT to the whole foreground process group. The temporary Prefect server is started
with SIGINT blocked (flows/local.py), so it stays up to record the run as Cancelled. A second Ctrl-C
stops at once, as Python does by default.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

from transformers import TrainerCallback

from embedforge.errors import EmbedforgeError

_requested = threading.Event()
_signal: list[str] = []  # what asked for the stop, as the message names it


class TrainingInterrupted(EmbedforgeError):
    """Training stopped on Ctrl-C at a step boundary; the run directory can be resumed."""


STOPS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and a supervisor's stop (systemd, `timeout`, a closed terminal)


def _ask_to_stop(signum, frame) -> None:
    _signal[:] = ["Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name]
    _requested.set()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C is a hard stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # and a second SIGTERM ends the process


@contextmanager
def stop_on_ctrl_c():
    """While the body trains in the main thread, Ctrl-C or SIGTERM asks for a stop at the next step instead of
    raising (Prefect's own SIGTERM handler would mark the run Crashed mid-step)."""
    _requested.clear()
    # A served run's stage runs off the main thread, where no handler can be set. A torchrun rank leaves the
    # signals alone: its ranks would stop at different steps and wait on each other for ever; the parent ends
    # them as a group (training/distributed.py) and the run resumes from the newest checkpoint.
    if threading.current_thread() is not threading.main_thread() or "LOCAL_RANK" in os.environ:
        yield
        return
    previous = {signum: signal.signal(signum, _ask_to_stop) for signum in STOPS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_requested() -> bool:
    return _requested.is_set()


def stopped_by() -> str:
    """What asked training to stop: Ctrl-C or SIGTERM."""
    return _signal[0] if _signal else "Ctrl-C"


class StopOnCtrlC(TrainerCallback):
    """Ends training after the step in progress, saving a checkpoint there when the recipe saves any."""

    def on_step_end(self, args, state, control, **kwargs):
        if _requested.is_set():
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
        return control
