"""Decide: publish this run's model, or keep the published one? The most important thing a retrain settles.

Side effect: the `<recipe>-push` artifact, this run's model beside the champion with the decision. The
flow hands the decision to push, which publishes exactly what was decided and nothing else.
"""

from __future__ import annotations

from prefect import task

from embedforge import hub
from embedforge.artifacts import create_markdown_artifact
from embedforge.config.push import PushConfig
from embedforge.decisions import ReleaseDecision
from embedforge.figures import Interval, Measurement
from embedforge.logs import run_logger
from embedforge.tasks.release import find_release
from embedforge.types import Metrics, RunRecord
from embedforge.uncertainty import paired

TITLES = {"published": "Decided to publish", "already published": "Already published", "rejected": "Rejected"}


def decide(
    config: PushConfig, headline: str, challenger: float, champion: float | None, difference: Interval | None = None
) -> tuple[bool, str]:
    """Champion/challenger: publish only when this run is better than what is published, beyond the noise when
    the difference has an interval (challenger minus champion, query by query)."""
    if champion is None:
        return True, "first release"
    if not config.require_improvement:
        return True, f"require_improvement is off ({headline}: {challenger:.4f} vs published {champion:.4f})"
    if challenger > champion and difference is not None and difference.low <= 0:
        return False, (
            f"{headline} {challenger:.4f} > published {champion:.4f}, but within the noise: the difference's "
            f"{difference.signed} over {difference.n} test queries includes 0; kept the published model"
        )
    if challenger > champion:
        beyond = f" ({difference.signed} over {difference.n} test queries)" if difference else ""
        return True, f"{headline} {challenger:.4f} > published {champion:.4f}{beyond}"
    if challenger == champion:
        # A forced retrain of the same inputs ties: another full copy of the same model would be all it adds.
        return False, f"{headline} {challenger:.4f} equals the published model's: kept the published model"
    return False, f"{headline} {challenger:.4f} < published {champion:.4f}: kept the published model"


def served_name(metrics: Metrics) -> str:
    """The figure champion and challenger are compared on: the headline of what the release serves."""
    if metrics.rerank and metrics.rerank.kept:
        return f"{metrics.headline} (two-stage, top {metrics.rerank.top_k})"
    return metrics.headline


def decision_markdown(decision: ReleaseDecision) -> str:
    """The decision as the dashboard shows it: what was decided, both figures, and why."""
    title = TITLES.get(decision.decision, "Not published")
    champion = "none" if decision.champion is None else f"{decision.champion:.4f}"
    return (
        f"## {title}: {decision.release}\n\n"
        f"| | {decision.headline} |\n|:--|--:|\n| this run | {decision.challenger:.4f} |\n"
        f"| published | {champion} |\n"
        + (
            f"| difference, {decision.difference.n} queries | {decision.difference.signed} |\n"
            if decision.difference
            else ""
        )
        + f"\n{decision.reason}\n"
    )


def _decision(config: PushConfig, record: RunRecord, metrics: Metrics, champion: Measurement | None, difference):
    """(decision, reason, where the release already is)."""
    if not config.active:
        return "trained", "push disabled", None
    if where := hub.call(config, find_release, record.release):
        return (
            "already published",
            f"release {record.release} was already published at {where}; a release is never rewritten",
            where,
        )
    best = None if champion is None else champion.figures[metrics.headline]
    publish, reason = decide(config, served_name(metrics), metrics.served[0], best, difference)
    return ("published" if publish else "champion kept"), reason, None


@task(name="decide-release")
def decide_release(
    config: PushConfig, record: RunRecord, metrics: Metrics, champion: Measurement | None
) -> ReleaseDecision:
    """Publish, keep the champion, or nothing to do (push off, or this release is already out): decided here."""
    challenger, queries = metrics.served
    best = None if champion is None else champion.figures[metrics.headline]
    difference = paired(champion.per_query.get(metrics.headline), queries) if champion else None
    decided, reason, where = _decision(config, record, metrics, champion, difference)
    decision = ReleaseDecision(
        decision=decided,
        reason=reason,
        release=record.release,
        headline=served_name(metrics),
        challenger=challenger,
        champion=best,
        difference=difference,
        target=config.local_dir or config.full_repo_id,
        location=where,
    )
    log = run_logger().warning if decided == "champion kept" else run_logger().info
    log("Decision: %s (%s)", "publish" if decision.publish else decided, reason)
    if config.active:
        create_markdown_artifact(
            decision_markdown(decision), key=record.artifact_key("push"), description="Push decision of the latest run"
        )
    return decision
