"""Talking to the operator's Prefect server about retraining: new data landed, and who hears about outcomes."""

from __future__ import annotations

from embedforge.errors import EmbedforgeError
from embedforge.orchestration import events
from embedforge.orchestration.automations import alerts, sync_automations
from embedforge.orchestration.server import check_server


def notify_data_updated(recipe: str) -> str:
    """Emit embedforge.data.updated for one recipe; its deployment's trigger starts a run."""
    from prefect import get_client
    from prefect.events import Event
    from prefect.exceptions import ObjectNotFound

    check_server({}, "notify")
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(f"finetune/{recipe}")
        except ObjectNotFound:
            raise EmbedforgeError(
                f"notify: no deployment finetune/{recipe} on this server; register it with "
                f"`embedforge deploy deployments/{recipe}.yaml`"
            ) from None
    events.send(Event(event=events.DATA_UPDATED, resource=events.recipe_resource(recipe)))
    return f"{events.DATA_UPDATED} sent for {recipe}: deployment finetune/{recipe} starts a run"


def install_alerts(block: str, stale_days: float) -> list[str]:
    """Create (or replace) the rejected-model and no-successful-run alerts, sent through a notification block."""
    from prefect.blocks.core import Block

    check_server({}, "alerts")
    if "/" not in block:
        raise EmbedforgeError(f"alerts: --block {block!r} must be type/name, e.g. slack-webhook/ml-team")
    try:
        document_id = Block.load(block)._block_document_id
    except ValueError as exc:
        raise EmbedforgeError(f"alerts: no notification block {block!r} on this server ({exc})") from None
    installed = sync_automations(alerts(document_id, stale_days))
    events.announce(_deployed_recipes())  # models deployed before the alert existed are watched from now
    return installed


def _deployed_recipes() -> list[str]:
    """The recipe names of the embedforge deployments on the server."""
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["embedforge"]))
        )
    return [deployment.name for deployment in found]
