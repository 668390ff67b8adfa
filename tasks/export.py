"""Export: the release's serving backends (ONNX, OpenVINO), each measured beside the PyTorch model.

Every backend is measured in this one process on the test split with the evaluators the PyTorch model was
measured with, and timed on the same texts, batch size and threads. One that loses more than export.max_drop of
the headline metric is left out of the release, and said so in the log, the artifact and the card.

Side effect: the files are written under ``<run>/export`` in the release's layout (push copies the kept ones);
the model folder is not touched. A reranker in the release gets the same backends under ``<run>/export/reranker``,
each judged on its two-stage figure over the embedder's top_k.
"""

from __future__ import annotations

import functools
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from prefect import task

from embedforge.artifacts import create_markdown_artifact
from embedforge.backends.onnx import export_onnx, optimize_onnx, quantize_onnx
from embedforge.backends.openvino import convert_openvino, quantize_openvino
from embedforge.backends.runtime import load_backend
from embedforge.columns import TEXT_COLUMNS
from embedforge.config.export import ExportConfig
from embedforge.evaluators import build_evaluators, run_evaluators
from embedforge.logs import quiet_export, run_logger
from embedforge.models import load_model
from embedforge.recipe import Recipe
from embedforge.reports import export_markdown
from embedforge.reranking import TwoStageBench, load_reranker
from embedforge.training.adapters import with_full_weights
from embedforge.types import BackendTrial, Metrics, Splits, TrainedModel


def _texts(parquet: str, limit: int) -> list[str]:
    """Up to `limit` texts of a split file, row by row across its text columns (queries and passages alike)."""
    frame = pd.read_parquet(parquet)
    texts = frame[[c for c in frame.columns if c in TEXT_COLUMNS]]  # not kept columns such as a group
    return [text for row in texts.itertuples(index=False) for text in row if isinstance(text, str)][:limit]


def _pairs(parquet: str, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` (query, passage) pairs of the training split: what a reranker's static int8 calibrates on."""
    frame = pd.read_parquet(parquet, columns=["anchor", "positive"]).head(limit)
    return list(zip(frame["anchor"], frame["positive"]))


def _write(backend: str, config: ExportConfig, model, out: Path, calibration: Callable[[], list]) -> Path:
    """One backend's file under `out`; the ONNX export the others start from is made once. `calibration`: what
    static int8 takes its activation ranges from (texts, or (query, passage) pairs for a reranker)."""
    plain = out / "onnx" / "model.onnx"
    if not plain.exists():
        export_onnx(model, plain)
    if backend == "onnx":
        return optimize_onnx(plain, config.optimization_level, model[0].model.config)
    if backend == "onnx-int8":
        return quantize_onnx(plain, config.instruction_set)
    converted = out / "openvino" / "openvino_model.xml"
    if not converted.exists():
        convert_openvino(plain, converted.parent)
    if backend == "openvino":
        return converted
    return quantize_openvino(converted, model, calibration())


def _texts_per_s(model, texts: list[str], batch_size: int) -> float:
    """The median of three timed passes, after a warm-up batch: first-call allocations are not serving."""
    model.encode(texts[:batch_size], batch_size=batch_size)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        model.encode(texts, batch_size=batch_size)
        rates.append(len(texts) / (time.perf_counter() - start))
    return statistics.median(rates)


def _trial(backend: str, file: str, served, bench: tuple[list, list[str], int], metric: str) -> BackendTrial:
    """A model measured like the PyTorch one: the same test-split evaluators, texts, batch size and threads."""
    evaluators, texts, batch_size = bench
    figures, _ = run_evaluators(served, evaluators)
    return BackendTrial(
        backend=backend,
        file=file,
        metric=metric,
        figure=figures[metric],
        texts_per_s=_texts_per_s(served, texts, batch_size),
    )


def _reference(pytorch, metrics: Metrics, bench: tuple[list, list[str], int]) -> BackendTrial:
    """The PyTorch model: its figure is evaluate's own; only its speed is taken here, beside the others'."""
    figure = metrics.finetuned[metrics.headline]
    speed = _texts_per_s(pytorch, *bench[1:])
    return BackendTrial(
        backend="pytorch",
        file="model.safetensors",
        metric=metrics.headline,
        figure=figure,
        texts_per_s=speed,
        kept=True,
    )


def _judge(trial: BackendTrial, reference: BackendTrial, max_drop: float) -> BackendTrial:
    drop = reference.figure - trial.figure
    trial.kept = drop <= max_drop
    if not trial.kept:
        trial.reason = f"lost {drop:.4f}, more than export.max_drop {max_drop:g}"
    return trial


def _log(trials: list[BackendTrial], what: str = "Export") -> None:
    reference, log = trials[0], run_logger()
    for t in trials[1:]:
        if t.figure is None:
            log.warning("%s %s: left out of the release (%s)", what, t.backend, t.reason)
            continue
        line = "%s %s: %s %.4f (%+.4f), %.0f texts/s (%.2fx PyTorch)%s"
        verdict = "" if t.kept else f"; left out of the release: {t.reason}"
        speed = t.texts_per_s / reference.texts_per_s
        figures = (what, t.backend, t.metric, t.figure, t.figure - reference.figure, t.texts_per_s, speed, verdict)
        (log.info if t.kept else log.warning)(line, *figures)


def _artifact(trials: list[BackendTrial], max_drop: float, key: str, reranker: list[BackendTrial]) -> None:
    kept = [t.backend for t in trials[1:] if t.kept] + [f"reranker {t.backend}" for t in reranker[1:] if t.kept]
    markdown = f"## Serving backends\n\n{export_markdown(trials, max_drop)}"
    if reranker:
        markdown += f"\n\n## The reranker's serving backends\n\n{export_markdown(reranker, max_drop)}"
    create_markdown_artifact(
        markdown,
        key=key,
        description=f"Backends in the release: {', '.join(kept) or 'none'}; each measured on the test split",
    )


@task(name="export-backends")
def export_backends(
    recipe: Recipe, model: TrainedModel, splits: Splits, metrics: Metrics, artifact_key: str | None
) -> TrainedModel:
    """Write each backend export.backends asks for, measure it, and keep those within export.max_drop."""
    out, config = Path(model.run_dir) / "export", recipe.export
    shutil.rmtree(out, ignore_errors=True)  # a half-written export of an interrupted attempt
    quiet_export()
    texts = _texts(next(iter(splits.parts("test").values()))[1], config.throughput_texts)
    bench = build_evaluators(splits, "test", recipe.evaluate), texts, recipe.evaluate.batch_size
    weights = with_full_weights(model.model_dir, out / "full-weights")  # a LoRA adapter exports merged
    pytorch = load_model(weights, max_seq_length=model.max_seq_length, device="cpu")
    reference = _reference(pytorch, metrics, bench)
    trials = [reference]
    calibration = functools.partial(_texts, splits.train, config.calibration_texts)
    for backend in config.backends:
        try:
            file = _write(backend, config, pytorch, out, calibration)
            served = load_backend(weights, backend.split("-")[0], str(file.resolve()), torch.get_num_threads())
            trial = _trial(backend, file.relative_to(out).as_posix(), served, bench, metrics.headline)
            trials.append(_judge(trial, reference, config.max_drop))
        except Exception as exc:  # noqa: BLE001 - one backend failing leaves the release its others and the weights
            trials.append(_failed(backend, metrics.headline, exc))
    _log(trials)
    reranker = (
        _reranker_trials(recipe, model, splits, metrics, out / "reranker") if _serves_reranker(model, metrics) else []
    )
    if artifact_key:
        _artifact(trials, config.max_drop, artifact_key, reranker)
    return model.model_copy(update={"export_dir": str(out), "backends": trials, "reranker_backends": reranker})


def _failed(backend: str, metric: str, exc: Exception) -> BackendTrial:
    return BackendTrial(backend=backend, file="", metric=metric, reason=f"export failed: {exc}")


def _serves_reranker(model: TrainedModel, metrics: Metrics) -> bool:
    return bool(model.reranker_dir and metrics.rerank and metrics.rerank.kept)


def _reranker_trials(recipe: Recipe, model: TrainedModel, splits: Splits, metrics: Metrics, out: Path) -> list:
    """The reranker's backends, each judged on its two-stage figure over the PyTorch embedder's top_k on the test
    split, and timed on the same (query, passage) pairs, beside the PyTorch reranker (the first row)."""
    config, rerank = recipe.export, metrics.rerank
    embedder = load_model(model.model_dir, max_seq_length=model.max_seq_length, device="cpu")
    evaluators, batch_size = build_evaluators(splits, "test", recipe.evaluate), recipe.evaluate.batch_size
    bench = TwoStageBench.on_test_split(embedder, evaluators, metrics.headline, rerank.top_k, batch_size)
    pytorch = load_reranker(model.reranker_dir, max_length=recipe.rerank.max_length, device="cpu")
    reference = bench.trial("pytorch", "model.safetensors", pytorch, figure=rerank.two_stage)
    trials = [reference.model_copy(update={"kept": True})]
    calibration = functools.partial(_pairs, splits.train, config.calibration_texts)
    for backend in config.backends:
        try:
            file = _write(backend, config, pytorch, out, calibration)
            served = load_backend(model.reranker_dir, backend.split("-")[0], str(file.resolve()), cross_encoder=True)
            trials.append(
                _judge(bench.trial(backend, file.relative_to(out).as_posix(), served), reference, config.max_drop)
            )
        except Exception as exc:  # noqa: BLE001 - as for the embedder: the reranker's weights still ship
            trials.append(_failed(backend, bench.metric, exc))
    _log(trials, "Reranker export")
    return trials
