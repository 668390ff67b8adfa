"""The run logger, wherever a stage's code happens to run."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError


def run_logger():
    """Prefect's run logger inside a flow or task run; a plain logger elsewhere.

    Elsewhere means torchrun workers (another process, no run context) and unit tests that call a
    task's function directly with ``.fn()``.
    """
    from prefect import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("embedforge")
