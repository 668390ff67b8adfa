"""Prefect events embedforge emits and listens for: what automations and deployment triggers match on.

Each recipe is one event resource, ``embedforge.recipe.<name>``: a data pipeline announces new data
for it, and each run announces its outcome for it (published, kept, rejected).
"""

from __future__ import annotations

from prefect.events import emit_event
from prefect.runtime import flow_run

from embedforge.errors import EmbedforgeError
from embedforge.redact import redact_data

DATA_UPDATED = "embedforge.data.updated"
DEPLOYED = "embedforge.deployment.registered"
PUBLISHED = "embedforge.model.published"
KEPT = "embedforge.model.kept"
REJECTED = "embedforge.model.rejected"
AWAITING_APPROVAL = "embedforge.release.awaiting-approval"


def recipe_resource(recipe: str) -> dict[str, str]:
    return {"prefect.resource.id": f"embedforge.recipe.{recipe}", "prefect.resource.name": recipe}


def emit_outcome(event: str, recipe: str, run_id: str, headline: str, value: float | None, reason: str) -> None:
    """Say how a run ended for its model; the run's flow run and task run are attached as related resources."""
    if not flow_run.id:  # a stage called outside a flow run (a script, a unit test) has no run to report
        return
    emit_event(
        event=event,
        resource=recipe_resource(recipe),
        payload=redact_data(
            {"recipe": recipe, "run_id": run_id, "headline": headline, "value": value, "reason": reason}
        ),
    )


def emit_awaiting_approval(recipe: str, release: str, headline: str, value: float) -> None:
    """A release waits for a person (push.approval): what an automation notifies on, with the run's link."""
    if not flow_run.id:
        return
    payload = {"release": release, "headline": headline, "value": value, "url": flow_run.ui_url}
    emit_event(event=AWAITING_APPROVAL, resource=recipe_resource(recipe), payload=redact_data(payload))


def send(*events, timeout: float = 30.0) -> None:
    """Send events now and wait until the server has them; a command exits right after, with no queue to drain.

    A server that takes the connection and never answers fails in `timeout` s, not never.
    """
    import asyncio

    from prefect.events.clients import get_events_client
    from prefect.settings import get_current_settings

    async def emit() -> None:
        async with get_events_client(reconnection_attempts=2) as client:
            for event in events:
                await client.emit(event)

    try:
        asyncio.run(asyncio.wait_for(emit(), timeout))
    except (asyncio.TimeoutError, OSError) as exc:
        url = get_current_settings().api.url
        raise EmbedforgeError(
            f"the Prefect API at {url} did not take the events within {timeout:.0f} s ({exc!r})"
        ) from None


def announce(recipes: list[str]) -> None:
    """Each model's deployment exists from now: what its no-successful-run alert counts from."""
    from prefect.events import Event

    send(*[Event(event=DEPLOYED, resource=recipe_resource(name)) for name in recipes])
