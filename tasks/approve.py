"""Record approval: a person's answer to a release waiting for sign-off, kept with the release.

Side effect: the model card gains an "Approval" section (the card is rendered before decide, so the sign-off is
the one thing added after it, and push uploads the card with it) and the `<recipe>-push` artifact shows the
answer. The decision that comes back carries it to push, the outcome, the history artifact and the event.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from embedforge.artifacts import create_markdown_artifact
from embedforge.decisions import Approval, ReleaseDecision
from embedforge.logs import run_logger
from embedforge.redact import redact
from embedforge.tasks.decide import decision_markdown


def approved(decision: ReleaseDecision, approval: Approval) -> ReleaseDecision:
    """The decision once a person has answered: published with the sign-off, or rejected with its reason."""
    if approval.approved:
        return decision.model_copy(update={"approval": approval, "reason": f"{decision.reason}; {approval.line}"})
    return decision.model_copy(update={"approval": approval, "decision": "rejected", "reason": approval.line})


def approval_section(approval: Approval) -> str:
    verdict = "Approved" if approval.approved else "Rejected"
    who = "nobody answered in time" if approval.by == "timeout" else f"by {approval.by}"
    reason = f": {approval.reason}" if approval.reason else ""
    return f"\n## Approval\n\n**{verdict}** {who} on {approval.at}{reason}\n"


@task(name="record-approval")
def record_approval(decision: ReleaseDecision, approval: Approval, model_dir: str, key: str) -> ReleaseDecision:
    """Keep the answer with the model (its card) and in the dashboard; hand on the decision it settles."""
    settled = approved(decision, approval)
    card = Path(model_dir) / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + redact(approval_section(approval)), encoding="utf-8")
    create_markdown_artifact(decision_markdown(settled), key=key, description="Push decision of the latest run")
    log = run_logger().info if approval.approved else run_logger().warning
    log("Release %s %s", decision.release, approval.line)
    return settled
