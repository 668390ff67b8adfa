"""Deployments from recipes, read back from a real Prefect server, and one run on a process worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments import run_deployment
from prefect.settings import get_current_settings

from embedforge.recipe import load_recipe, recipe_files

from conftest import cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def deployed(prefect_server):
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="test-gpu", type="process"))
    result = cli("deploy", "--pool", "test-gpu")
    assert result.exit_code == 0, result.output
    return result.output


def test_one_deployment_per_recipe_with_schedule_pool_tags_and_limit(deployed):
    recipes = [load_recipe(p) for p in recipe_files(folder=str(REPO / "deployments"))]
    assert [r.name for r in recipes] == [
        "arctic-embed-l-llm-blog",
        "bge-small-en-v1.5-recipes",
        "deberta-v3-xsmall-snli",
        "demo-minilm-cached",
        "demo-minilm-docs",
        "demo-minilm-export",
        "demo-minilm-rerank",
        "demo-minilm",
        "msmarco-distilbert-quran-id",
        "qwen3-embedding-0.6b-dnd",
    ]
    with get_client(sync_client=True) as client:
        for recipe in recipes:
            deployment = client.read_deployment_by_name(f"finetune/{recipe.name}")
            assert deployment.work_pool_name == "test-gpu"
            assert deployment.tags == list(dict.fromkeys(["embedforge", recipe.name, *recipe.deployment.tags]))
            # Every run sends heartbeats as often as the silence automation that deploy installed expects.
            env = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "180", **recipe.deployment.job_variables.get("env", {})}
            assert deployment.job_variables == {**recipe.deployment.job_variables, "env": env}
            assert deployment.parameters["recipe"] == recipe.model_dump(mode="json")
            assert deployment.global_concurrency_limit.limit == 1
            (schedule,) = deployment.schedules
            assert (schedule.schedule.cron, schedule.schedule.timezone) == (
                recipe.deployment.schedule.cron,
                recipe.deployment.schedule.timezone,
            )
            # Process workers run the flow from the project folder, not a temporary one.
            assert any(
                "set_working_directory" in str(step) and str(REPO) in str(step) for step in deployment.pull_steps or []
            )
    dnd = next(r for r in recipes if r.name == "qwen3-embedding-0.6b-dnd")
    assert dnd.deployment.job_variables["env"] == {"EMBEDFORGE_DND_DATA": "/data/dnd/pairs.jsonl"}


def test_demo_deployment_runs_on_a_process_worker(deployed, tmp_path):
    demo = load_recipe(REPO / "deployments" / "demo-minilm.yaml").model_dump(mode="json")
    # The demo itself, cut down to seconds: fewer rows and steps, output outside the repository.
    demo["ingest"]["limit"] = 160
    demo["split"]["eval_size"] = 0.0
    demo["evaluate"]["gates"] = {}  # three steps prove the worker runs the flow, not that the model improves
    demo["train"]["args"].update({"max_steps": 3, "logging_steps": 1, "disable_tqdm": True})
    demo["push"]["local_dir"] = str(tmp_path / "published")
    flow_run = run_deployment(
        "finetune/demo-minilm", parameters={"recipe": demo, "output_dir": str(tmp_path / "runs")}, timeout=0
    )

    env = {**os.environ, "PREFECT_API_URL": get_current_settings().api.url, "HF_HUB_OFFLINE": "1"}
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "test-gpu", "--run-once", "--limit", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), worker.stdout[-3000:] + worker.stderr[-3000:]
    assert list((tmp_path / "runs" / "demo-minilm").glob("*/model/README.md"))
    assert (tmp_path / "published" / "latest" / "training_meta.json").exists()


def test_serve_builds_the_same_deployments_without_a_pool(monkeypatch):
    import prefect

    from embedforge.cli import deploy
    from embedforge.cli.deploy import serve_recipes
    from embedforge.orchestration import events

    served = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **kwargs: served.extend(deployments))
    for server_call in ("check_server", "install_self_healing"):  # what this test is not about
        monkeypatch.setattr(deploy, server_call, lambda *args, **kwargs: None)
    monkeypatch.setattr(events, "announce", lambda *args, **kwargs: None)
    paths = recipe_files(folder=str(REPO / "deployments"))
    serve_recipes(paths)
    assert [d.name for d in served] == [load_recipe(p).name for p in paths]
    for deployment, path in zip(served, paths):
        recipe = load_recipe(path)
        assert deployment.work_pool_name is None and deployment.parameters["recipe"] == recipe.model_dump(mode="json")
        assert deployment.schedules[0].schedule.cron == recipe.deployment.schedule.cron
        assert deployment.concurrency_limit == 1
        assert deployment.entrypoint == "embedforge.flows.finetune.finetune"  # a module, not a file


def test_deploy_checks_every_pool_before_registering_any(deployed, tmp_path, write_recipe, recipe_dict):
    from prefect.exceptions import ObjectNotFound

    ok = write_recipe({**recipe_dict, "name": "aaa-first", "deployment": {"work_pool": "test-gpu"}}, "aaa-first.yaml")
    missing = write_recipe({**recipe_dict, "name": "zzz-last", "deployment": {"work_pool": "cpu"}}, "zzz-last.yaml")
    result = cli("deploy", ok, missing)
    assert result.exit_code == 1
    url = get_current_settings().api.url
    assert result.output.strip() == (
        f"deploy: work pool 'cpu' (named by {missing}) does not exist on {url}; nothing was registered. "
        "Create it with `prefect work-pool create cpu --type process`, or pass --pool"
    )
    with get_client(sync_client=True) as client:
        with pytest.raises(ObjectNotFound):
            client.read_deployment_by_name("finetune/aaa-first")


def test_a_bad_second_recipe_registers_nothing(deployed, write_recipe, recipe_dict):
    from prefect.exceptions import ObjectNotFound

    good = write_recipe({**recipe_dict, "name": "aaa-good", "deployment": {"work_pool": "test-gpu"}}, "aaa-good.yaml")
    bad = write_recipe(
        {**recipe_dict, "name": "zzz-bad", "deployment": {"work_pool": "test-gpu", "pool": "x"}}, "zzz-bad.yaml"
    )
    result = cli("deploy", good, bad)
    assert result.exit_code == 1 and f"{bad}: deployment.pool: unknown key" in result.output
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
        client.read_deployment_by_name("finetune/aaa-good")


def test_a_recipe_whose_heartbeat_the_silence_automation_would_take_for_a_crash_is_refused(
    deployed, write_recipe, recipe_dict
):
    slow = {"work_pool": "test-gpu", "job_variables": {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "600"}}}
    path = write_recipe({**recipe_dict, "name": "slow-heartbeat", "deployment": slow}, "slow.yaml")
    result = cli("deploy", path)
    assert result.exit_code == 1
    assert result.output.startswith(
        f"{path}: deployment.job_variables.env.PREFECT_FLOWS_HEARTBEAT_FREQUENCY: '600' must be a number of seconds "
        "no larger than 180"
    )


def test_a_run_on_a_worker_with_rarer_heartbeats_refuses_before_training(deployed, monkeypatch):
    """A worker or job template that overrides the heartbeat deploy handed out: the run stops in one line."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from embedforge.errors import EmbedforgeError
    from embedforge.orchestration.automations import check_heartbeat_rule

    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "a-deployment")  # Prefect's way to mock the runtime
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 180}):
        check_heartbeat_rule()  # 3 x 180 s is the silence deploy installed
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 300}), pytest.raises(EmbedforgeError) as error:
        check_heartbeat_rule()
    assert str(error.value).startswith(
        "this worker sends a heartbeat every 300 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY), but "
        "embedforge-silent-runs-crash marks a run Crashed after 540 s without one"
    )


@pytest.mark.slow  # embedforge in a subprocess
@pytest.mark.parametrize("command", ["serve"])  # deploy asks the same health check
def test_deploy_and_serve_against_a_server_that_is_down_say_so_in_one_line(command):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "embedforge"), command, str(REPO / "deployments" / "demo-minilm.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        f"{command}: the Prefect API at http://127.0.0.1:{port}/api does not answer; is the server running?"
    )


@pytest.mark.slow  # embedforge in a subprocess
@pytest.mark.parametrize("command", [["notify", "demo-minilm"]])  # deploy and serve share its check
def test_a_server_that_takes_the_connection_and_never_answers_is_one_line_in_seconds(command):
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nothing ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/api"
        started = time.monotonic()
        done = subprocess.run(
            [str(Path(sys.executable).parent / "embedforge"), *command],
            env={**os.environ, "PREFECT_API_URL": url},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
    assert done.returncode == 1 and time.monotonic() - started < 60
    assert done.stderr.strip() == f"{command[0]}: the Prefect API at {url} does not answer; is the server running?"
