"""The run logger, wherever a stage's code happens to run."""

from __future__ import annotations

import logging


def run_logger():
    """Prefect's run logger inside a flow or task run; a plain logger elsewhere.

    Elsewhere means torchrun workers (another process, no run context) and unit tests that call a
    task's function directly with ``.fn()``.
    """
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("embedforge")


class _RedactedRecord(logging.LogRecord):
    """A log record whose message and traceback pass the redaction step once, before any handler sees them."""

    def __init__(self, *args, **kwargs) -> None:
        from embedforge.redact import redact

        super().__init__(*args, **kwargs)
        try:
            message = self.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's to report, as it would
            return
        self.msg, self.args = redact(message), ()
        if self.exc_info and not self.exc_text:
            self.exc_text = redact(logging.Formatter().formatException(self.exc_info))


def redact_logs() -> None:
    """Every log record of this process redacted: the console, Prefect's API (the database) and files alike."""
    logging.setLogRecordFactory(_RedactedRecord)


def quiet_libraries() -> None:
    """No progress bars from datasets, the Hub client or model loading: a run shows its own log lines.

    The trainer's bar is the one kept (tasks/progress.py); these libraries would otherwise draw a
    bar for every parquet file written and every model loaded, a dozen per run.
    """
    import warnings

    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    # datasets logs an ERROR for a JSON file it cannot parse; ingest reports it, naming the row datasets does not.
    logging.getLogger("datasets.packaged_modules.json.json").setLevel(logging.CRITICAL)
    # pypdf warns of every repair it makes to a damaged PDF; a file it cannot read is named by the corpus stage.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    _quiet_sentence_transformers()
    # torch warns on every CPU dataloader that pin_memory (a trainer default) has nothing to pin.
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true but no accelerator")


def _quiet_sentence_transformers() -> None:
    """Two bars sentence-transformers draws whatever the logging settings; each module's own name is replaced."""
    from functools import partial

    import sentence_transformers.base.model_card as model_card
    import sentence_transformers.sentence_transformer.model as encoder
    import sentence_transformers.util.hard_negatives as hard_negatives
    from tqdm.autonotebook import tqdm, trange

    # While it picks the card's widget examples, at every trainer start.
    model_card.tqdm = partial(tqdm, disable=True)
    # Hard-negative mining encodes with show_progress_bar=True hard-wired: two "Batches" bars per mining.
    # The call passes disable= itself, so a partial would be overridden; this forces it.
    encoder.trange = lambda *args, **kwargs: trange(*args, **{**kwargs, "disable": True})
    # ... and then a "Computing similarity scores" bar, whatever its verbose= says.
    hard_negatives.trange = encoder.trange


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    return "pre-processing before quantization" not in record.getMessage()


def quiet_export() -> None:
    """The exporters' notes to their own developers, which a run's reader can do nothing about.

    The tracer warns of every Python branch it freezes (the export is checked against PyTorch afterwards, on the
    test split); onnxruntime's quantizer suggests a pre-processing script; NNCF draws a bar per calibration pass.
    """
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
    warnings.filterwarnings("ignore", message=r"Converting a tensor to a Python boolean")
    logging.getLogger().addFilter(_no_preprocessing_advice)  # the same filter object is added once
    logging.getLogger("nncf").setLevel(logging.ERROR)
    try:
        from nncf.common.logging import track_progress
    except ImportError:  # no OpenVINO backend asked for, and NNCF not installed
        return
    init = track_progress.track.__init__
    if not getattr(init, "quiet", False):
        track_progress.track.__init__ = lambda self, *args, **kwargs: init(self, *args, **{**kwargs, "disable": True})
        track_progress.track.__init__.quiet = True
