"""Quality gate: does the fine-tuned model meet the recipe's minimums? A rejection is a decision, not an error.

Side effect: the `<recipe>-gain` table artifact, headed with the verdict, so the latest gain table in the
dashboard never passes off a rejected model as a result.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact

from embedforge.config.evaluate import EvaluateConfig
from embedforge.evaluators import resolve_metric
from embedforge.logs import run_logger
from embedforge.reports import gain_table
from embedforge.types import Metrics


def gate_failures(config: EvaluateConfig, metrics: Metrics) -> list[str]:
    """Each gate the fine-tuned model misses, with its value, minimum and shortfall."""
    failures = []
    for name, minimum in config.gates.items():
        if name == "gain":
            name, value = f"gain in {metrics.headline}", metrics.gain
        else:
            value = metrics.finetuned[resolve_metric(name, metrics.finetuned)]
        if not value >= minimum:
            failures.append(f"{name} = {value:.4f} < {minimum} (short by {minimum - value:.4f})")
    return failures


@task(name="check-quality-gate")
def check_quality_gate(
    config: EvaluateConfig, metrics: Metrics, model_dir: str, artifact_key: str | None
) -> str | None:
    """Why the model is rejected (nothing will be published; it stays in model_dir), or None when it passes."""
    failures = gate_failures(config, metrics)
    reason = f"quality gate failed: {'; '.join(failures)}. The model is kept at {model_dir}" if failures else None
    if config.gates and not failures:
        run_logger().info("Quality gate passed: %s", ", ".join(config.gates))
    if artifact_key:
        verdict = f"REJECTED by the quality gate, not published: {'; '.join(failures)}" if failures else "Passed"
        create_table_artifact(
            gain_table(metrics),
            key=artifact_key,
            description=f"{verdict}. Test-split metrics, base vs fine-tuned; headline {metrics.headline}",
        )
    return reason
