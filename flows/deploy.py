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
from flows.recipe import Recipe, load_recipe
from tasks import events
from tasks.errors import EmbedforgeError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/finetune.py:finetune"


def data_trigger(recipe: Recipe) -> DeploymentEventTrigger:
    """Retrain when a data pipeline says new data landed for this recipe (`embedforge notify <recipe>`)."""
    return DeploymentEventTrigger(
        name=f"{recipe.name}-data-updated",
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


def check_server(pools: dict[str, list[Path]]) -> None:
    """Before anything is registered: the API answers and every work pool the recipes name exists on it."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise EmbedforgeError(
            "deploy: no Prefect server to register with; start one (prefect server start) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    with get_client(sync_client=True) as client:
        if client.api_healthcheck() is not None:
            raise EmbedforgeError(f"deploy: the Prefect API at {url} does not answer; is the server running?")
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
    check_server(pools)
    registered = [_register(recipe, pool, job_variables or {}, source) for recipe in recipes.values()]
    install_self_healing()
    return registered


def install_self_healing() -> list[str]:
    """The automations that retry crashed runs, sized to the heartbeat the workers send."""
    from prefect.settings import get_current_settings

    return sync_automations(self_healing(get_current_settings().flows.heartbeat_frequency or 180))


def _register(recipe: Recipe, pool: str | None, job_variables: dict[str, Any], source: Path) -> tuple[str, str]:
    settings = recipe.deployment
    settings.job_variables = {**settings.job_variables, **job_variables}
    deployment_id = _flow_for(recipe, source).deploy(
        **deployment_options(recipe),
        work_pool_name=pool or settings.work_pool,
        work_queue_name=settings.work_queue,
        job_variables=settings.job_variables,
        image=settings.job_variables.get("image"),
        build=False,
        push=False,
        print_next_steps=False,
    )
    return f"finetune/{recipe.name}", str(deployment_id)


def serve_recipes(paths: list[Path]) -> None:
    """Serve every recipe's deployment from this process: one GPU box, no work pool, schedules included."""
    from prefect import serve

    install_self_healing()
    serve(*[finetune.to_deployment(**deployment_options(load_recipe(path))) for path in paths])
