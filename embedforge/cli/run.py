"""`embedforge run` and `resume`: the flow on this machine (a temporary server when none is set), and its summary."""

from __future__ import annotations

import signal
import time

import typer

from embedforge.errors import EmbedforgeError

SYNTHETIC = (
    "measured on queries made from the documents, not written by people: label 50-100 real queries as "
    "split.test_file to measure what users will see"
)


def fail(exc: Exception, code: int) -> None:
    """The message alone, in red on stderr, and the exit code: no traceback for a user's mistake."""
    typer.secho(str(exc), fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _terminate_as_ctrl_c(signum, frame) -> None:
    # A supervisor's stop (systemd, timeout, a terminal closing) ends the run as Ctrl-C does: training stops at
    # the next step, and the summary says how to resume, instead of a silent exit.
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def run_flow(recipe: str, overrides: list[str], **flow_options) -> None:
    """Read and check the recipe while the temporary server starts, run the flow, print what it decided."""
    from embedforge.cli.local import start_embedded_api

    started = time.monotonic()
    api = start_embedded_api()
    signal.signal(signal.SIGTERM, _terminate_as_ctrl_c)
    from prefect.exceptions import CancelledRun

    from embedforge.cli.preflight import preflight
    from embedforge.flows.finetune import finetune
    from embedforge.flows.run import output_root
    from embedforge.recipe import load_recipe

    try:
        parsed = load_recipe(recipe, overrides)
        preflight(parsed, recipe, str(output_root(flow_options["output_dir"])))
        _check_approver(parsed, recipe, api)
        _api_ready(api)
        result = finetune(recipe=parsed, **flow_options)
    except EmbedforgeError as exc:
        if api:
            api.join()  # stopped half-started, the server would print its lifespan's traceback under the refusal
        fail(exc, 1)
    except CancelledRun as stopped:  # Ctrl-C during training: stopped at a step, the flow run Cancelled
        fail(EmbedforgeError(f"Interrupted: {stopped}"), 130)
    except KeyboardInterrupt:
        fail(EmbedforgeError(f"Interrupted. Continue it with `embedforge resume {_where(flow_options)}`"), 130)
    _summary(result, time.monotonic() - started)


def _check_approver(recipe, source: str, api) -> None:
    """An approval waits for a person at a dashboard: the temporary server has no dashboard anyone could open."""
    if api and recipe.push.approval == "required" and recipe.push.active:
        raise EmbedforgeError(
            f"{source}: push.approval: required waits for a person to approve the release in the Prefect dashboard, "
            "and this run's temporary server has none; start one (prefect server start), set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api and run again, or run the recipe's deployment"
        )


def _api_ready(api) -> None:
    """The temporary server started (or the operator's answering), and our errors one line on the console."""
    from embedforge.cli.local import check_api, one_line_errors, wait_for_api

    if api:
        wait_for_api(api)
    else:
        check_api()
    one_line_errors()


def _where(flow_options: dict) -> str:
    """The run directory to resume, as far as the command line knows it."""
    from embedforge.flows.run import output_root

    return flow_options.get("resume_dir") or f"the run directory under {output_root(flow_options['output_dir'])}"


def _doubt(result) -> None:
    """The gain's interval, keyword search beside the model, and a warning when the test split is too small to tell."""
    from embedforge.keyword_search import baseline_line
    from embedforge.reranking import rerank_line
    from embedforge.uncertainty import gain_line, too_small

    if gain := result.intervals.get("gain"):
        typer.echo(f"  {gain_line(result.finetuned - result.base, gain)}")
    if result.baselines:
        bm25, hybrid = result.baselines["bm25"], result.baselines["hybrid"]
        typer.echo(f"  {baseline_line(result.finetuned, bm25, hybrid, result.intervals.get('over_bm25'))}")
    if result.rerank:
        typer.echo(f"  {rerank_line(result.rerank)}")
    if warning := too_small(result.intervals):
        typer.secho(f"  Warning: {warning}", fg=typer.colors.YELLOW)


def _summary(result, seconds: float) -> None:
    """The run's outcome in a few lines; a model its quality gate rejected exits 1, as a failed check does."""
    typer.echo(f"\nRun directory: {result.run_dir}")
    outcome = result.outcome
    if result.up_to_date:
        current = result.up_to_date
        typer.echo(f"Up to date with release {current.release} at {current.location}: nothing trained (--force trains)")
        typer.echo(f"{result.headline}: published {result.finetuned:.4f}")
    else:
        typer.echo(f"{result.headline}: base {result.base:.4f} -> fine-tuned {result.finetuned:.4f}")
        _doubt(result)
    if result.synthetic_test:
        typer.echo(f"  {SYNTHETIC}")
    if outcome.decision == "rejected":
        typer.secho(f"Rejected: {outcome.reason}; nothing was published", fg=typer.colors.RED)
    elif result.push and result.push.already:
        typer.echo(f"Push: {result.push.reason}")
    elif result.push:
        push = result.push
        typer.echo(f"Push: published to {push.location}" if push.pushed else f"Push: not published ({push.reason})")
    minutes, seconds = divmod(round(seconds), 60)
    typer.echo(f"Wall time: {minutes} min {seconds:02d} s")
    if outcome.decision == "rejected":
        raise typer.Exit(1)
