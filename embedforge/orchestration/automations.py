"""Prefect automations that keep retraining running without a human: crashed runs retried, silence noticed, alerts.

`embedforge deploy` (and `serve`) install the self-healing pair for every run tagged ``embedforge``:

- a flow run that goes silent (its worker or pod died, so no heartbeat arrives) is marked Crashed;
- a Crashed run is rescheduled as the same flow run, so it keeps its run id and run directory, and
  training resumes from the newest complete checkpoint on the next worker that sees that directory.

Flow-level retries cannot do this: they live in the process that died. A run that keeps crashing
stops after ``deployment.crash_retries`` automatic retries. `embedforge alerts` adds notifications.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.runtime import flow_run

from embedforge.errors import EmbedforgeError
from embedforge.orchestration import events

CRASH_RETRY_MESSAGE = "embedforge: rescheduled after a crash; training resumes from the newest complete checkpoint"
RETRY_AFTER = timedelta(seconds=30)
# Any of these after a crash means someone (a person, another automation) already dealt with the run.
AFTER_CRASH = ("Scheduled", "AwaitingRetry", "Pending", "Running", "Cancelling", "Cancelled", "Completed", "Failed")
RUN_ENDED = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}
EMBEDFORGE_RUNS = {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.embedforge"}
ANY_FLOW_RUN = {"prefect.resource.id": "prefect.flow-run.*"}
ANY_RECIPE = {"prefect.resource.id": "embedforge.recipe.*"}


def _nothing_after(event: str, expected: set[str], within: timedelta) -> EventTrigger:
    """Fires for one embedforge flow run when `event` was not followed by any of `expected` within `within`."""
    return EventTrigger(
        after={event},
        expect=expected,
        match=ANY_FLOW_RUN,
        match_related=EMBEDFORGE_RUNS,
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=within,
    )


def self_healing(heartbeat_seconds: int) -> list[Automation]:
    """Silent runs become Crashed; Crashed runs are scheduled again. Three missed heartbeats mean the worker is gone."""
    return [_retry_crashed(), _crash_silent(3 * heartbeat_seconds)]


def _retry_crashed() -> Automation:
    return Automation(
        name="embedforge-crashed-runs-retry",
        description=f"Reschedule a crashed embedforge run after {RETRY_AFTER.seconds} s; "
        "it resumes from its newest complete checkpoint.",
        # Proactive: fire when nothing else happened to the crashed run for RETRY_AFTER. Reacting at
        # once races the worker that is still letting go of the run, and a Prefect 3.8 process worker
        # that is handed back a run it still holds stops with "already holding" (a CapacityLimiter
        # error). The wait also leaves a human's own retry alone.
        trigger=_nothing_after(
            "prefect.flow-run.Crashed", {f"prefect.flow-run.{state}" for state in AFTER_CRASH}, RETRY_AFTER
        ),
        actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="AwaitingRetry", message=CRASH_RETRY_MESSAGE)],
    )


SILENT_RUNS = "embedforge-silent-runs-crash"


def _crash_silent(silence: int) -> Automation:
    return Automation(
        name=SILENT_RUNS,
        description=f"Mark an embedforge run Crashed when no heartbeat arrived for {silence} s.",
        trigger=_nothing_after(
            "prefect.flow-run.heartbeat", {"prefect.flow-run.heartbeat", *RUN_ENDED}, timedelta(seconds=silence)
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message=f"embedforge: no heartbeat for {silence} s; its worker is gone"
            )
        ],
    )


def alerts(block_document_id: UUID, stale_days: float) -> list[Automation]:
    """Notify when a quality gate rejects a model, when a model has had no successful run for `stale_days`, and
    when a release waits for approval."""
    return [
        Automation(
            name="embedforge-model-rejected",
            description="Notify when a retrained model is rejected (its gate, or an approver); the message says why.",
            trigger=EventTrigger(expect={events.REJECTED}, match=ANY_RECIPE, posture=Posture.Reactive, threshold=1),
            actions=[
                SendNotification(
                    block_document_id=block_document_id,
                    subject="embedforge: {{ event.resource.name }} rejected, not published",
                    body="Run {{ event.payload.run_id }} of {{ event.resource.name }}: {{ event.payload.reason }}.",
                )
            ],
        ),
        _no_successful_run(block_document_id, stale_days),
        _awaiting_approval(block_document_id),
    ]


def _awaiting_approval(block_document_id: UUID) -> Automation:
    return Automation(
        name="embedforge-release-awaiting-approval",
        description="Notify when a release waits for a person's approval (push.approval: required).",
        trigger=EventTrigger(
            expect={events.AWAITING_APPROVAL}, match=ANY_RECIPE, posture=Posture.Reactive, threshold=1
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject="embedforge: release {{ event.payload.release }} waits for approval",
                body="{{ event.payload.headline }} {{ event.payload.value }}. Approve or reject it on the paused "
                "flow run: {{ event.payload.url }}",
            )
        ],
    )


def _no_successful_run(block_document_id: UUID, stale_days: float) -> Automation:
    # Successful: published, or the champion kept, or up to date (new data simply has not come). Counted per
    # model from its deployment's registration, so a model that never once succeeds is reported too.
    days = _duration(timedelta(days=stale_days))
    return Automation(
        name="embedforge-no-successful-run",
        description=f"Notify when an embedforge model has had no successful run (published, champion kept or up "
        f"to date) for {days} since its deployment was registered or its last successful run.",
        trigger=EventTrigger(
            after={events.DEPLOYED, events.PUBLISHED, events.KEPT},
            expect={events.PUBLISHED, events.KEPT},
            match=ANY_RECIPE,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(days=stale_days),
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id,
                subject=f"embedforge: no successful run of {{{{ event.resource.name }}}} for {days}",
                body=f"{{{{ event.resource.name }}}} has had no successful run for {days}: every run since failed "
                "or was rejected, or none ran. Look at the recent runs of deployment "
                "finetune/{{ event.resource.name }} and its history artifact.",
            )
        ],
    )


def _duration(span: timedelta) -> str:
    """14 days, 6 hours, 20 minutes: the largest unit that keeps a whole-ish number."""
    seconds = span.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            value = round(seconds / size, 1)
            return f"{value:g} {unit}{'s' * (value != 1)}"
    return f"{round(seconds)} seconds"


def sync_automations(automations: list[Automation]) -> list[str]:
    """Create each automation, replacing one of the same name, so running deploy again changes nothing twice."""
    for automation in automations:
        try:
            Automation.read(name=automation.name).delete()
        except ValueError:
            pass  # not there yet
        automation.create()
    return [automation.name for automation in automations]


def _automatic_retry_states() -> tuple[list, list]:
    """This flow run's Scheduled states, and those of them our crash automation set; empty outside a flow run."""
    if not flow_run.id:
        return [], []
    from prefect import get_client

    with get_client(sync_client=True) as client:
        states = sorted(client.read_flow_run_states(flow_run.id), key=lambda state: state.timestamp)
    scheduled = [state for state in states if state.type == StateType.SCHEDULED]
    return scheduled, [state for state in scheduled if state.message == CRASH_RETRY_MESSAGE]


def automatic_retries() -> int:
    """How often this flow run crashed and was rescheduled by the self-healing automation."""
    return len(_automatic_retry_states()[1])


def check_crash_retries(limit: int) -> None:
    """Stop the automatic retry loop of a run that keeps crashing (out of host memory, a broken node)."""
    scheduled, automatic = _automatic_retry_states()
    if automatic and scheduled[-1] is automatic[-1] and len(automatic) > limit:
        raise EmbedforgeError(
            f"this run crashed {len(automatic)} times and was retried automatically each time "
            f"(deployment.crash_retries = {limit}); not again. Look at the worker's log "
            "(host memory, preemption), then retry the flow run by hand"
        )


def check_heartbeat_rule() -> None:
    """Refuse to start a deployment's run whose heartbeats are rarer than the silence automation allows.

    Such a run would be marked Crashed while it trains and rescheduled beside itself. `embedforge deploy`
    hands its heartbeat to every deployment; this catches a worker or job template that overrides it.
    """
    from prefect.runtime import deployment
    from prefect.settings import get_current_settings

    if not deployment.id:
        return

    heartbeat = get_current_settings().flows.heartbeat_frequency
    try:
        silence = Automation.read(name=SILENT_RUNS).trigger.within.total_seconds()
    except ValueError:
        return  # no self-healing installed on this server: nothing marks silent runs Crashed
    if heartbeat and 3 * heartbeat > silence:
        raise EmbedforgeError(
            f"this worker sends a heartbeat every {heartbeat} s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY), but "
            f"{SILENT_RUNS} marks a run Crashed after {silence:.0f} s without one; a healthy run would be "
            f"rescheduled while it trains. Set PREFECT_FLOWS_HEARTBEAT_FREQUENCY <= {silence / 3:.0f} for the "
            "workers, or run `embedforge deploy` with the workers' setting"
        )
