"""Record outcome: what a run decided for its model, told to the dashboard and to the automations.

Side effect: Prefect artifacts and one event. The `<recipe>-history` table gains one row per run
(its trend is the question an operator asks first); `<recipe>-release` changes only when a release
is published, so it always names the live one. The flow's final state carries the same decision.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from prefect import task
from prefect.artifacts import Artifact, MarkdownArtifact, TableArtifact
from prefect.runtime import flow_run

from embedforge.decisions import Outcome
from embedforge.logs import run_logger
from embedforge.orchestration import events
from embedforge.redact import redact, redact_data

EVENTS = {
    "published": events.PUBLISHED,
    "champion kept": events.KEPT,
    "up to date": events.KEPT,
    "rejected": events.REJECTED,
}
HISTORY_ROWS = 200  # a year of weekly retrains and then some; older rows stay in earlier artifact versions


def _figure(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def history_row(outcome: Outcome, when: datetime) -> dict[str, str]:
    """One row of the history table: the decision and base -> fine-tuned -> champion on the headline metric."""
    return {
        "date": f"{when:%Y-%m-%d %H:%M} UTC",
        "decision": outcome.decision,
        "base": _figure(outcome.base),
        "fine-tuned": _figure(outcome.finetuned),
        "champion": _figure(outcome.champion),
        "run": outcome.run_id,
        "data": outcome.data_fingerprint or "",
        "metric": outcome.headline or "",
        "reason": outcome.reason,
    }


def release_markdown(outcome: Outcome, when: datetime) -> str:
    return (
        f"## Live release of {outcome.recipe}: {outcome.release}\n\n"
        f"| published | {outcome.headline} | where |\n|:--|--:|:--|\n"
        f"| {when:%Y-%m-%d %H:%M} UTC | {_figure(outcome.finetuned)} | {outcome.location} |\n\n"
        f"Run {outcome.run_id}: {outcome.reason}\n"
    )


def _previous_rows(key: str) -> list[dict]:
    latest = Artifact.get(key)
    if latest is None or not latest.data:
        return []
    rows = json.loads(latest.data) if isinstance(latest.data, str) else latest.data
    return rows if isinstance(rows, list) else []


def write_history(outcome: Outcome, history_key: str, release_key: str, flow_run_id: str | None = None) -> None:
    """Append this run to the history table, and name the live release when this run published one.

    Runs of one model never overlap (its deployment's concurrency limit), so read-then-append is safe.
    """
    when = datetime.now(timezone.utc)
    rows = [redact_data(history_row(outcome, when)), *_previous_rows(history_key)][:HISTORY_ROWS]
    TableArtifact(
        key=history_key,
        table=rows,
        description=f"Every run of {outcome.recipe}, newest first: what it decided and on which figures",
        flow_run_id=flow_run_id or flow_run.id,
    ).create()
    if outcome.decision == "published":
        MarkdownArtifact(
            key=release_key,
            markdown=redact(release_markdown(outcome, when)),
            description=f"The release of {outcome.recipe} that is live now",
            flow_run_id=flow_run_id or flow_run.id,
        ).create()


@task(name="record-outcome")
def record_outcome(outcome: Outcome, history_key: str, release_key: str) -> Outcome:
    """Tell the dashboard (history, live release) and the automations (one event) what this run decided."""
    log = run_logger().warning if outcome.decision == "rejected" else run_logger().info
    log("%s: %s", outcome.state_name, outcome.reason)
    write_history(outcome, history_key, release_key)
    event = EVENTS.get(outcome.decision)
    if event:
        value = outcome.finetuned if outcome.decision != "up to date" else outcome.champion
        events.emit_outcome(event, outcome.recipe, outcome.run_id, outcome.headline, value, outcome.reason)
    return outcome
