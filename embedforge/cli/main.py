"""The embedforge command line: run, validate, deploy and serve recipes."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from embedforge.cli.run import fail, run_flow
from embedforge.errors import EmbedforgeError

# The temporary server `embedforge run` starts would report usage to Prefect at start-up. Training
# boxes are often offline, where that logs an ERROR (and a database-locked traceback) in a run that
# succeeded. An operator's own server keeps its own setting; this reaches only the one we start.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

app = typer.Typer(
    help="Fine-tune sentence-transformers embedding models as Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help="Recipe file, e.g. deployments/demo-minilm.yaml")],
    output_dir: Annotated[
        str | None,
        typer.Option("--output-dir", help="Where <recipe>/<run-id>/ go (default: $EMBEDFORGE_OUTPUT_DIR or runs)."),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a recipe value: key.path=value (YAML value).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Train even when the published release has the same data and recipe.")
    ] = False,
) -> None:
    """Run the fine-tuning flow locally (Prefect's embedded API unless PREFECT_API_URL is set)."""
    run_flow(recipe, set_ or [], output_dir=output_dir, force=force)


@app.command()
def resume(run_dir: Annotated[str, typer.Argument(help="A run directory, e.g. runs/demo-minilm/20261124-...")]) -> None:
    """Continue a failed or killed run in its own directory: a trained model is not trained again,
    a killed training goes on from its newest complete checkpoint."""
    from pathlib import Path

    folder = Path(run_dir)
    if not (folder / "recipe.yaml").is_file():
        fail(EmbedforgeError(f"{run_dir}: not a run directory (it has no recipe.yaml)"), 1)
    run_flow(str(folder / "recipe.yaml"), [], output_dir=str(folder.parent.parent), resume_dir=str(folder), force=True)


@app.command()
def validate(
    recipes: Annotated[list[str], typer.Argument(help="Recipe files to check.")],
    recipe_only: Annotated[
        bool, typer.Option("--recipe-only", help="Check the files alone, not the data, model or push target.")
    ] = False,
) -> None:
    """Check recipes without training: the file, and what the run would find (data, base model, metrics, push)."""
    from embedforge.recipe import load_recipe

    failed = False
    for path in recipes:
        try:
            recipe = load_recipe(path)
            if not recipe_only:
                # Imported once a recipe has been read: the checks load sentence-transformers, seconds a file
                # refused for its shape or its fields need not wait.
                from embedforge.cli.preflight import preflight

                preflight(recipe, path)
            typer.echo(f"{path}: ok")
        except EmbedforgeError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            failed = True
    if failed:
        raise typer.Exit(1)


@app.command()
def deploy(
    recipes: Annotated[
        list[str] | None, typer.Argument(help="Recipe files (default: every recipe in deployments/).")
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option("--pool", help="Work pool for all of them (default: each recipe's deployment.work_pool)."),
    ] = None,
    job_variables: Annotated[
        str | None,
        typer.Option(
            "--job-variables",
            help="YAML file of job variables merged into every recipe's (e.g. docker/docker-gpu-job-variables.yaml).",
        ),
    ] = None,
) -> None:
    """Register one Prefect deployment per recipe with its schedule, pool, job variables and tags."""
    from embedforge.cli.deploy import deploy_recipes
    from embedforge.recipe import recipe_files
    from embedforge.recipe_file import load_job_variables

    try:
        extra = load_job_variables(job_variables) if job_variables else None
        for name, deployment_id in deploy_recipes(recipe_files(recipes), pool, extra):
            typer.echo(f"{name}: {deployment_id}")
    except EmbedforgeError as exc:
        fail(exc, 1)


@app.command()
def serve(
    recipes: Annotated[
        list[str] | None, typer.Argument(help="Recipe files (default: every recipe in deployments/).")
    ] = None,
) -> None:
    """Serve the recipes' deployments from this process (one GPU box, no work pool), schedules included."""
    from embedforge.cli.deploy import serve_recipes
    from embedforge.recipe import recipe_files

    try:
        serve_recipes(recipe_files(recipes))
    except EmbedforgeError as exc:
        fail(exc, 1)


@app.command()
def notify(
    recipe: Annotated[str, typer.Argument(help="Recipe name, e.g. demo-minilm (its deployment is finetune/<name>).")],
) -> None:
    """Say that new data landed for a recipe: its deployment retrains now (the event embedforge.data.updated)."""
    from embedforge.orchestration.notify import notify_data_updated

    try:
        typer.echo(notify_data_updated(recipe))
    except EmbedforgeError as exc:
        fail(exc, 1)


@app.command()
def alerts(
    block: Annotated[
        str, typer.Option("--block", help="Prefect notification block, as type/name (e.g. slack-webhook/ml-team).")
    ],
    stale_days: Annotated[
        float,
        typer.Option("--stale-days", min=0.0001, help="Alert when a model has had no successful run for this long."),
    ] = 14,
) -> None:
    """Install the alerts: a model rejected (by its quality gate or an approver), a model with no successful run for
    --stale-days days (published, champion kept or up to date) counted from its deployment's registration, and a
    release waiting for approval."""
    from embedforge.orchestration.notify import install_alerts

    try:
        for name in install_alerts(block, stale_days):
            typer.echo(f"automation {name}: installed")
    except EmbedforgeError as exc:
        fail(exc, 1)


@app.command("recipe-reference")
def recipe_reference() -> None:
    """Print every recipe key with its default and meaning (Markdown)."""
    from embedforge.cli.reference import reference_markdown

    typer.echo(reference_markdown())


def main() -> None:
    """The `embedforge` command: the app, then an exit that skips tearing the interpreter down."""
    from embedforge.logs import redact_logs

    redact_logs()
    try:
        app()
    except SystemExit as done:
        _exit(0 if done.code is None else done.code if isinstance(done.code, int) else 1)


def _exit(code: int) -> None:
    """Exit as the interpreter would, less its teardown: ~2 s after a run's summary, for nothing.

    Freeing a trained model, torch and Prefect object by object (the final garbage collection) takes
    seconds and the memory goes back to the system anyway (mypy exits so too). What must happen still
    does: Prefect's log and event workers drain (threads' exit hooks), the temporary server stops
    and log handlers flush (atexit). Tests calling `app` in-process never get here.
    """
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # joins threads, runs their exit hooks
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
