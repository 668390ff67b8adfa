"""Scheduled retraining as an operator gets it: `prefect server start` with its scheduler, a cron deployment
registered by `embedforge deploy`, and a process worker. A deployment that *has* a schedule proves nothing;
the scheduler has to make runs from it, and a worker has to finish one."""

from __future__ import annotations

import pytest

from conftest import flow_runs, live_api, live_cli, start_worker, stop, wait_for

pytestmark = pytest.mark.slow


def _scheduled_runs(server: str, deployment_id: str) -> list[dict]:
    return flow_runs(server, scheduled=True, deployment_id={"any_": [deployment_id]})


def test_the_scheduler_makes_runs_and_a_worker_completes_one(live_server, recipe_dict, tmp_path, write_recipe):
    recipe_dict["name"] = "tiny-cron"
    recipe_dict["train"]["args"].update({"max_steps": 4})
    recipe_dict["evaluate"] = {"gates": {}}  # the schedule is under test here, not the model
    recipe_dict["deployment"] = {"work_pool": "cron-pool", "schedule": {"cron": "* * * * *"}}  # due within a minute
    live_cli(live_server, "prefect", "work-pool", "create", "cron-pool", "--type", "process")
    live_cli(live_server, "embedforge", "deploy", str(write_recipe(recipe_dict)))
    (deployment,) = live_api(live_server, "deployments/filter", {"deployments": {"name": {"any_": ["tiny-cron"]}}})

    upcoming = wait_for(lambda: _scheduled_runs(live_server, deployment["id"]), 60, "the scheduler's runs")
    assert {run["state_type"] for run in upcoming} == {"SCHEDULED"}

    runs = tmp_path / "runs"
    worker = start_worker(live_server, "cron-pool", tmp_path / "worker.log", EMBEDFORGE_OUTPUT_DIR=str(runs))
    try:
        done = wait_for(
            lambda: [r for r in _scheduled_runs(live_server, deployment["id"]) if r["state_type"] == "COMPLETED"],
            300,
            "a scheduled run to complete on the worker",
        )
    finally:
        stop(worker)
    assert done[0]["state_name"] == "Published", done[0]["state_name"]
    assert list((runs / "tiny-cron").glob("*/model/README.md"))
    assert (tmp_path / "published" / "latest" / "training_meta.json").exists()


def test_a_cron_shortcut_is_scheduled_by_the_real_scheduler(live_server, recipe_dict, write_recipe):
    # validate accepts @daily because Prefect does: the scheduler must then make runs from it, at midnight.
    recipe_dict["name"] = "tiny-daily"
    recipe_dict["deployment"] = {"work_pool": "daily-pool", "schedule": {"cron": "@daily"}}
    live_cli(live_server, "prefect", "work-pool", "create", "daily-pool", "--type", "process")
    live_cli(live_server, "embedforge", "deploy", str(write_recipe(recipe_dict)))
    (deployment,) = live_api(live_server, "deployments/filter", {"deployments": {"name": {"any_": ["tiny-daily"]}}})
    upcoming = wait_for(lambda: _scheduled_runs(live_server, deployment["id"]), 60, "the scheduler's runs")
    starts = sorted(run["expected_start_time"] for run in upcoming)
    assert len(starts) >= 2 and all("T00:00:00" in start for start in starts), starts
