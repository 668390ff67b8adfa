"""Approval (`push.approval: required`): a release decide would publish waits for a person's sign-off.

The flow run pauses with a form (Prefect's `RunInput`), which the dashboard shows on the paused run beside the
decision and its figures: the way a model registry's stage transition asks for a reviewer. The answer, or the
timeout, settles the decision; the `record-approval` task writes it down. Pausing belongs to the flow run, so it
happens here in the flow and not inside a task.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from embedforge.config.push import PushConfig
from embedforge.decisions import Approval, ReleaseDecision
from embedforge.errors import EmbedforgeError
from embedforge.logs import run_logger
from embedforge.orchestration import events
from embedforge.reports import doubt_markdown
from embedforge.tasks.approve import record_approval
from embedforge.tasks.decide import decision_markdown
from embedforge.types import Metrics, RunRecord, TrainedModel
from embedforge.uncertainty import gain_line


class ApprovalForm(RunInput):
    """What the operator fills in on the paused run: publish or not, who, and why."""

    approve: bool = Field(False, description="Publish this release (leave off to reject it).")
    name: str = Field(description="Your name: kept with the release, in its history and its card.")
    reason: str = Field("", description="Why: kept with your name.")


def _form(decision: ReleaseDecision, metrics: Metrics, timeout: int) -> type[ApprovalForm]:
    """The paused run's form, headed with what the operator decides on: the decision and the gain over the base."""
    headline = metrics.headline
    gain = metrics.intervals.get("gain")
    said = gain_line(metrics.gain, gain) if gain else f"gain {metrics.gain:+.4f}"
    figures = (
        f"\n**Test split, {headline}:** base {metrics.base[headline]:.4f} → fine-tuned "
        f"{metrics.finetuned[headline]:.4f}, {said}.\n\n{doubt_markdown(metrics)}\n"
    )
    wait = f"{timeout / 3600:g} h" if timeout >= 3600 else f"{timeout} s"
    guide = (
        f"\n**Approve or reject this release.** Unanswered within {wait}, it is rejected. "
        "Approved, the run publishes it; rejected, the model stays in the run directory.\n"
    )
    return ApprovalForm.with_initial_data(description=decision_markdown(decision) + figures + guide)


def _back_to_running() -> None:
    """After a timeout the run is still Paused on the server, and Prefect lets no task of a paused run start.

    A run someone cancelled while it waited stays cancelled: forcing it back to Running would undo their decision.
    """
    from prefect import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
        if state is None or not state.is_paused():
            raise EmbedforgeError(f"the run was {state.name if state else 'stopped'} while it waited for approval")
        client.set_flow_run_state(flow_run.id, Running(message="approval timed out"), force=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def wait_for_approval(
    config: PushConfig, record: RunRecord, decision: ReleaseDecision, model: TrainedModel, metrics: Metrics
) -> ReleaseDecision:
    """Pause until an operator answers the form (or the timeout), then record the answer; a release decide did not
    publish, or one that needs no approval, passes through untouched."""
    if not (decision.publish and config.approval == "required"):
        return decision
    run_logger().warning(
        "Release %s waits for approval in the Prefect dashboard: %s", decision.release, record.flow_run_url
    )
    events.emit_awaiting_approval(record.recipe, decision.release, decision.headline, decision.challenger)
    timeout = config.approval_timeout
    try:
        form = _form(decision, metrics, timeout)
        answer = pause_flow_run(wait_for_input=form, timeout=timeout, key="approval")
        approval = Approval(
            approved=answer.approve, by=answer.name.strip() or "unnamed", reason=answer.reason, at=_now()
        )
    except FlowPauseTimeout:
        _back_to_running()
        approval = Approval(approved=False, by="timeout", reason=f"no answer within {timeout} s", at=_now())
    return record_approval(decision, approval, model.model_dir, record.artifact_key("push"))
