"""Deployments from recipes: one Prefect deployment per recipe, registered or served.

The recipe is the one source of truth: schedule, tags, pool, job variables and concurrency all
come from its ``deployment`` section, and the whole recipe is the deployment's parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.deployments.runner import EntrypointType
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from embedforge.errors import EmbedforgeError
from embedforge.flows.finetune import finetune
from embedforge.orchestration import events
from embedforge.orchestration.automations import self_healing, sync_automations
from embedforge.orchestration.server import check_server
from embedforge.recipe import Recipe, load_recipe

# A module entrypoint: the worker imports the flow from the installed package, never a file on its path.
ENTRYPOINT = "embedforge.flows.finetune.finetune"
HEARTBEAT_VARIABLE = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"


def data_trigger(recipe: Recipe) -> DeploymentEventTrigger:
    """Retrain when a data pipeline says new data landed for this recipe (`embedforge notify <recipe>`)."""
    return DeploymentEventTrigger(
        name=f"{recipe.name}: retrain on new data",
        description=f"Runs finetune/{recipe.name} when {events.DATA_UPDATED} arrives for {recipe.name} "
        f"(a data pipeline's `embedforge notify {recipe.name}`).",
        expect={events.DATA_UPDATED},
        match={"prefect.resource.id": events.recipe_resource(recipe.name)["prefect.resource.id"]},
    )


def deployment_options(recipe: Recipe) -> dict[str, Any]:
    """What every form of the deployment shares: name, parameters, schedule, trigger, tags, concurrency."""
    settings = recipe.deployment
    schedule = settings.schedule
    return {
        "name": recipe.name,
        "description": recipe.description or f"Fine-tune {recipe.train.base_model} ({recipe.name})",
        "parameters": {"recipe": recipe.model_dump(mode="json")},
        "tags": list(dict.fromkeys(["embedforge", recipe.name, *settings.tags])),
        "schedules": [Cron(schedule.cron, timezone=schedule.timezone)] if schedule else [],
        "triggers": [data_trigger(recipe)],
        "concurrency_limit": settings.concurrency_limit,
    }


def _flow_for(recipe: Recipe, source: Path):
    """The flow as the installed package has it; process workers start its runs in the folder deployed from.

    A plain to_deployment().apply() would run in a temporary folder without the recipes' data (their
    paths are relative to the project folder), so process workers get that folder as working directory.
    An image has its own working directory.
    """
    if "image" in recipe.deployment.job_variables:
        return finetune
    return finetune.from_source(source=str(source), entrypoint=ENTRYPOINT)


def deploy_recipes(
    paths: list[Path], pool: str | None = None, job_variables: dict[str, Any] | None = None, source: Path | None = None
) -> list[tuple[str, str]]:
    """Register one deployment per recipe, all or none; return (deployment name, id) pairs.

    ``pool`` and ``job_variables`` apply to every recipe: the same recipes move from one GPU box
    to a Docker or Kubernetes fleet without editing them.
    """
    recipes = {path: load_recipe(path) for path in paths}
    pools: dict[str, list[Path]] = {}
    for path, recipe in recipes.items():
        pools.setdefault(pool or recipe.deployment.work_pool, []).append(path)
    heartbeat = heartbeat_seconds()
    variables = {
        path: with_heartbeat(path, {**recipe.deployment.job_variables, **(job_variables or {})}, heartbeat)
        for path, recipe in recipes.items()
    }
    check_server(pools)
    folder = source or Path.cwd()
    registered = [_register(recipe, pool, variables[path], folder) for path, recipe in recipes.items()]
    install_self_healing(heartbeat)
    events.announce([recipe.name for recipe in recipes.values()])
    return registered


def heartbeat_seconds() -> int:
    """The heartbeat this deploy sizes the silence automation to, and hands to every run it registers."""
    from prefect.settings import get_current_settings

    return get_current_settings().flows.heartbeat_frequency or 180


def with_heartbeat(path: Path, job_variables: dict[str, Any], heartbeat: int) -> dict[str, Any]:
    """Job variables whose env sends heartbeats as often as the silence automation expects them.

    The automation marks a run Crashed after 3 heartbeats' silence; a worker left on another setting would
    have healthy runs crashed and rescheduled beside themselves. A recipe that sets its own, slower, is refused.
    """
    env = dict(job_variables.get("env") or {})
    own = env.setdefault(HEARTBEAT_VARIABLE, str(heartbeat))
    if not str(own).isdigit() or int(own) > heartbeat:
        raise EmbedforgeError(
            f"{path}: deployment.job_variables.env.{HEARTBEAT_VARIABLE}: {own!r} must be a number of seconds "
            f"no larger than {heartbeat}, the heartbeat the silence automation is sized to (3 x {heartbeat} s); "
            f"deploy with {HEARTBEAT_VARIABLE}={own} set instead"
        )
    return {**job_variables, "env": env}


def install_self_healing(heartbeat: int) -> list[str]:
    """The automations that retry crashed runs, sized to the heartbeat the runs send."""
    return sync_automations(self_healing(heartbeat))


def _register(recipe: Recipe, pool: str | None, job_variables: dict[str, Any], source: Path) -> tuple[str, str]:
    # to_deployment + apply registers without Prefect's per-deployment console table and process-pool notice.
    deployment = _flow_for(recipe, source).to_deployment(
        **deployment_options(recipe),
        work_pool_name=pool or recipe.deployment.work_pool,
        work_queue_name=recipe.deployment.work_queue,
        job_variables=job_variables,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return f"finetune/{recipe.name}", str(deployment.apply(image=job_variables.get("image")))


def serve_recipes(paths: list[Path]) -> None:
    """Serve every recipe's deployment from this process: one GPU box, no work pool, schedules included.

    Served runs are this process's children and send its heartbeat setting, the one the automation is sized to.
    """
    from prefect import serve

    recipes = [load_recipe(path) for path in paths]
    check_server({}, "serve")
    install_self_healing(heartbeat_seconds())
    events.announce([recipe.name for recipe in recipes])
    module = EntrypointType.MODULE_PATH
    serve(*[finetune.to_deployment(**deployment_options(recipe), entrypoint_type=module) for recipe in recipes])
