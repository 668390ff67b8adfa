"""Deployments from recipes: one Prefect deployment per recipe, registered or served.

The recipe is the one source of truth: schedule, tags, pool, job variables and concurrency all
come from its ``deployment`` section, and the whole recipe is the deployment's parameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from flows.automations import self_healing, sync_automations
from flows.finetune import finetune
from flows.local import api_answers
from flows.recipe import Recipe, load_recipe
from tasks import events
from tasks.errors import EmbedforgeError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/finetune.py:finetune"
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
    """Code from the project's folder for process workers; from the image when the recipe names one.

    A plain to_deployment().apply() would run in a temporary folder without the project's
    modules or data, so process workers get the source folder as their working directory.
    """
    if "image" in recipe.deployment.job_variables:
        return finetune
    return finetune.from_source(source=str(source), entrypoint=ENTRYPOINT)


def check_server(pools: dict[str, list[Path]], command: str = "deploy") -> None:
    """Before anything is registered: the API answers and every work pool the recipes name exists on it."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise EmbedforgeError(
            f"{command}: no Prefect server to register with; start one (prefect server start) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    if not api_answers():
        raise EmbedforgeError(f"{command}: the Prefect API at {url} does not answer; is the server running?")
    with get_client(sync_client=True) as client:
        for pool, paths in pools.items():
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                names = ", ".join(str(p) for p in paths)
                raise EmbedforgeError(
                    f"deploy: work pool {pool!r} (named by {names}) does not exist on {url}; nothing was registered. "
                    f"Create it with `prefect work-pool create {pool} --type process`, or pass --pool"
                ) from None


def deploy_recipes(
    paths: list[Path], pool: str | None = None, job_variables: dict[str, Any] | None = None, source: Path = PROJECT_ROOT
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
    registered = [_register(recipe, pool, variables[path], source) for path, recipe in recipes.items()]
    install_self_healing(heartbeat)
    announce([recipe.name for recipe in recipes.values()])
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


def announce(recipes: list[str]) -> None:
    """Each model's deployment exists from now: what its no-successful-run alert counts from."""
    from prefect.events import Event

    events.send(*[Event(event=events.DEPLOYED, resource=events.recipe_resource(name)) for name in recipes])


def _register(recipe: Recipe, pool: str | None, job_variables: dict[str, Any], source: Path) -> tuple[str, str]:
    # to_deployment + apply registers without Prefect's per-deployment console table and process-pool notice.
    deployment = _flow_for(recipe, source).to_deployment(
        **deployment_options(recipe),
        work_pool_name=pool or recipe.deployment.work_pool,
        work_queue_name=recipe.deployment.work_queue,
        job_variables=job_variables,
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
    announce([recipe.name for recipe in recipes])
    serve(*[finetune.to_deployment(**deployment_options(recipe)) for recipe in recipes])
