"""Quality gates: does the fine-tuned model meet the recipe's minimums? A rejection is a decision, not an error.
Does the reranker beat the embedder alone? One that does not is left out of the release, and the embedder goes on.

Side effect: the `<recipe>-gain` table artifact (and `<recipe>-rerank`), headed with the verdict, so the latest
table in the dashboard never passes off a rejected model as a result.
"""

from __future__ import annotations

from prefect import task

from embedforge.artifacts import create_markdown_artifact, create_table_artifact
from embedforge.config.evaluate import EvaluateConfig
from embedforge.config.rerank import RerankConfig
from embedforge.evaluators import resolve_metric
from embedforge.figures import RerankFigures
from embedforge.logs import run_logger
from embedforge.reports import doubt_markdown, gain_table, rerank_markdown
from embedforge.types import Metrics
from embedforge.uncertainty import NO_INTERVAL


def gate_failures(config: EvaluateConfig, metrics: Metrics) -> list[str]:
    """Each gate the fine-tuned model misses, with its value, minimum and shortfall."""
    failures = []
    for name, minimum in config.gates.items():
        if name == "gain":
            name, value = f"gain in {metrics.headline}", metrics.gain
        elif name == "gain_lower_bound":
            if not (gain := metrics.intervals.get("gain")):
                failures.append(f"gain_lower_bound: {metrics.headline} has no interval ({NO_INTERVAL})")
                continue
            name, value = f"the gain's 95 % interval ({gain.signed}, {gain.n} queries): its lower bound", gain.low
        elif name == "over_bm25":
            if (bm25 := metrics.baselines.get("bm25", {}).get(metrics.headline)) is None:
                failures.append(f"over_bm25: {metrics.headline} has no BM25 figure (retrieval test data only)")
                continue
            name, value = f"{metrics.headline} fine-tuned minus BM25", metrics.finetuned[metrics.headline] - bm25
        else:
            value = metrics.domain[resolve_metric(name, metrics.domain)]
        if not value >= minimum:
            failures.append(f"{name} = {value:.4f} < {minimum} (short by {minimum - value:.4f})")
    return failures + general_failures(config, metrics)


def general_failures(config: EvaluateConfig, metrics: Metrics) -> list[str]:
    """Each general set whose primary metric fell by more than evaluate.max_general_drop."""
    if config.max_general_drop is None:
        return []
    failures = []
    for name, (key, *_) in metrics.general.items():
        base, finetuned = metrics.base[key], metrics.finetuned[key]
        if not base - finetuned <= config.max_general_drop:
            failures.append(
                f"general set {name}: {key} fell {base - finetuned:.4f} ({base:.4f} -> {finetuned:.4f}), "
                f"more than evaluate.max_general_drop {config.max_general_drop}"
            )
    return failures


@task(name="check-quality-gate")
def check_quality_gate(
    config: EvaluateConfig, metrics: Metrics, model_dir: str, artifact_key: str | None
) -> str | None:
    """Why the model is rejected (nothing will be published; it stays in model_dir), or None when it passes."""
    failures = gate_failures(config, metrics)
    reason = f"quality gate failed: {'; '.join(failures)}. The model is kept at {model_dir}" if failures else None
    checked = [*config.gates] + (["evaluate.max_general_drop"] if config.max_general_drop is not None else [])
    if checked and not failures:
        run_logger().info("Quality gate passed: %s", ", ".join(checked))
    if artifact_key:
        verdict = f"REJECTED by the quality gate, not published: {'; '.join(failures)}" if failures else "Passed"
        create_table_artifact(
            gain_table(metrics),
            key=artifact_key,
            description=f"{verdict}. Test-split metrics, base vs fine-tuned; headline {metrics.headline}"
            + (f"; general sets (outside the domain): {', '.join(metrics.general)}" if metrics.general else "")
            + f"\n\n{doubt_markdown(metrics)}",
        )
    return reason


def reranker_failures(config: RerankConfig, rerank: RerankFigures) -> list[str]:
    """Each rerank gate the two-stage figure misses, with its value and minimum."""
    over, failures = rerank.intervals.get("over_embedder"), []
    for name, minimum in config.gates.items():
        if name == "over_embedder":
            value, what = rerank.two_stage - rerank.figures["embedder"], "two-stage minus embedder alone"
        elif over is None:
            failures.append(f"{name}: no interval (fewer than two test queries)")
            continue
        else:
            value, what = over.low, f"the low end of two-stage minus embedder alone's {over.signed}"
        if not value >= minimum:
            failures.append(f"rerank.gates.{name}: {rerank.metric} {what} = {value:+.4f} < {minimum}")
    return failures


def rerank_artifact(rerank: RerankFigures, key: str) -> None:
    verdict = "Reranker in the release" if rerank.kept else "Reranker LEFT OUT of the release"
    create_markdown_artifact(
        f"## Two-stage retrieval on the test split\n\n{rerank_markdown(rerank)}\n",
        key=key,
        description=f"{verdict}; embedder alone vs embedder + reranker over the top {rerank.top_k}",
    )


@task(name="check-reranker-gate")
def check_reranker_gate(config: RerankConfig, metrics: Metrics, artifact_key: str | None) -> Metrics:
    """Keep the reranker in the release when it meets rerank.gates; otherwise say why it is left out."""
    failures = reranker_failures(config, metrics.rerank)
    reason = "; ".join(failures)
    rerank = metrics.rerank.model_copy(update={"kept": not failures, "reason": reason})
    if failures:
        run_logger().warning("The reranker is left out of the release (the embedder goes on alone): %s", reason)
    else:
        run_logger().info("Reranker gate passed: %s", ", ".join(config.gates) or "no gates set")
    if artifact_key:
        rerank_artifact(rerank, artifact_key)
    return metrics.model_copy(update={"rerank": rerank})
