"""The retraining loop against `prefect server start` (events, triggers and automations running), as an operator
runs it: new data starts the right deployment, and a run whose worker process is killed finishes on its own."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conftest import (
    REPO,
    child_pids,
    complete_checkpoints,
    flow_runs,
    live_cli,
    start_worker,
    stop,
    trainer_state,
    wait_for,
)
from conftest import live_api as api

pytestmark = pytest.mark.slow


def _runs_of(server: str, deployment: str) -> list[dict]:
    (found,) = api(server, "deployments/filter", {"deployments": {"name": {"any_": [deployment]}}})
    return flow_runs(server, deployment_id={"any_": [found["id"]]})  # not the cron schedule's upcoming runs


def test_notify_starts_a_run_of_that_deployment_and_no_other(live_server):
    live_cli(live_server, "prefect", "work-pool", "create", "notify-pool", "--type", "process")
    demo, other = REPO / "deployments" / "demo-minilm.yaml", REPO / "deployments" / "deberta-v3-xsmall-snli.yaml"
    live_cli(live_server, "embedforge", "deploy", str(demo), str(other), "--pool", "notify-pool")
    assert _runs_of(live_server, "demo-minilm") == []

    out = live_cli(live_server, "embedforge", "notify", "demo-minilm").stdout
    assert "embedforge.data.updated sent for demo-minilm" in out
    (run,) = wait_for(lambda: _runs_of(live_server, "demo-minilm"), 60, "the triggered run")
    assert run["created_by"]["type"] == "AUTOMATION"
    time.sleep(3)  # time enough for a wrong trigger to have fired too
    assert len(_runs_of(live_server, "demo-minilm")) == 1 and _runs_of(live_server, "deberta-v3-xsmall-snli") == []


def test_notify_names_a_recipe_without_a_deployment(live_server):
    done = live_cli(live_server, "embedforge", "notify", "no-such-model", ok=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "notify: no deployment finetune/no-such-model on this server" in done.stderr


def _complete_checkpoints(runs: Path) -> list[Path]:
    return [
        checkpoint for folder in runs.glob("tiny-crash/*/checkpoints") for checkpoint in complete_checkpoints(folder)
    ]


def _state(server: str, flow_run_id: str) -> str:
    return api(server, f"flow_runs/{flow_run_id}")["state"]["type"]


def test_a_run_whose_process_is_killed_is_retried_and_resumes(live_server, recipe_dict, tmp_path, write_recipe):
    recipe_dict["name"] = "tiny-crash"
    recipe_dict["train"]["args"].update(
        {"max_steps": 60, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 3, "logging_steps": 50}
    )
    recipe_dict["deployment"] = {"work_pool": "crash-pool"}
    live_cli(live_server, "prefect", "work-pool", "create", "crash-pool", "--type", "process")
    live_cli(live_server, "embedforge", "deploy", str(write_recipe(recipe_dict)))
    started = live_cli(live_server, "prefect", "deployment", "run", "finetune/tiny-crash").stdout
    flow_run_id = next(line.split()[-1] for line in started.splitlines() if "UUID" in line)

    runs = tmp_path / "runs"  # where every worker finds the run directory (a shared volume in production)
    worker = start_worker(live_server, "crash-pool", tmp_path / "worker.log", EMBEDFORGE_OUTPUT_DIR=str(runs))
    try:
        wait_for(lambda: _complete_checkpoints(runs), 240, "a complete checkpoint")
        (flow_process,) = child_pids(worker.pid)
        os.kill(flow_process, signal.SIGKILL)  # the training process dies: no clean-up of any kind
        killed_at = _complete_checkpoints(runs)[-1]
        torn = killed_at.parent / f"checkpoint-{int(killed_at.name.split('-')[1]) + 1}"
        torn.mkdir()
        (torn / "model.safetensors").write_bytes(b"\0" * 100)  # killed while saving: no trainer_state.json
        wait_for(lambda: _state(live_server, flow_run_id) == "COMPLETED", 600, "the retried run to complete")
    finally:
        stop(worker)

    states = [s["type"] for s in api(live_server, f"flow_run_states/?flow_run_id={flow_run_id}")]
    assert "CRASHED" in states and states.count("RUNNING") == 2, states
    (run_dir,) = (runs / "tiny-crash").iterdir()  # the retry found the same run directory
    logs = api(live_server, "logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    messages = "\n".join(entry["message"] for entry in logs)
    resumed_at = int(messages.split("Resuming from ")[1].split("checkpoint-")[1].split()[0])
    assert resumed_at == int(killed_at.name.split("-")[1])
    assert f"Skipping {torn}: it was not saved whole" in messages
    final = trainer_state(_complete_checkpoints(runs)[-1])
    assert final["global_step"] == 60  # the same total as an uninterrupted run
    assert (run_dir / "model" / "README.md").exists()


@pytest.fixture
def webhook(live_server):
    """A notification block posting to a local webhook; yields the bodies it received."""
    import http.server
    import threading

    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    received: list[str] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    hook = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    with temporary_settings(updates={PREFECT_API_URL: f"{live_server}/api"}):
        CustomWebhookNotificationBlock(
            name="ml-team", url=f"http://127.0.0.1:{hook.server_port}/hook", json_data={"text": "{{body}}"}
        ).save("ml-team", overwrite=True)
        yield received
        from prefect.automations import Automation

        Automation.read(name="embedforge-no-successful-run").delete()  # other tests' models are not watched
    hook.shutdown()


def _emit(recipe: str, event: str, **payload) -> None:
    from prefect.events import Event

    from embedforge.orchestration import events

    events.send(Event(event=event, resource=events.recipe_resource(recipe), payload=payload))


def test_alerts_notify_when_a_gate_rejects_a_model_and_when_a_release_waits(live_server, webhook):
    from embedforge.orchestration import events

    out = live_cli(live_server, "embedforge", "alerts", "--block", "custom-webhook/ml-team", "--stale-days", "7")
    assert out.stdout.splitlines() == [
        "automation embedforge-model-rejected: installed",
        "automation embedforge-no-successful-run: installed",
        "automation embedforge-release-awaiting-approval: installed",
    ]
    _emit("tiny-alert", events.REJECTED, run_id="r1", reason="quality gate failed: gain = -0.0100 < 0.0")
    wait_for(lambda: webhook, 60, "the webhook notification")
    assert webhook[0] == "Run r1 of tiny-alert: quality gate failed: gain = -0.0100 < 0.0."
    url = "http://127.0.0.1:4200/runs/flow-run/abc"
    _emit("tiny-alert", events.AWAITING_APPROVAL, release="tiny-alert-r2", headline="ndcg", value=0.61, url=url)
    wait_for(lambda: len(webhook) > 1, 60, "the awaiting-approval notification")
    assert webhook[1] == f"ndcg 0.61. Approve or reject it on the paused flow run: {url}"


def test_no_successful_run_alert_names_the_model_and_spares_one_that_is_up_to_date(live_server, webhook):
    """Counted from the deployment's registration; an up-to-date run is a successful one."""
    from embedforge.orchestration import events

    live_cli(live_server, "prefect", "work-pool", "create", "alert-pool", "--type", "process")
    deployed_before = REPO / "deployments" / "demo-minilm-cached.yaml"
    live_cli(live_server, "embedforge", "deploy", str(deployed_before), "--pool", "alert-pool")
    seconds = 20
    live_cli(
        live_server, "embedforge", "alerts", "--block", "custom-webhook/ml-team", "--stale-days", str(seconds / 86400)
    )
    _emit("tiny-healthy", events.DEPLOYED)

    def stale_alerts() -> list[str]:
        _emit("tiny-healthy", events.KEPT, run_id="r", reason="up to date")  # its data simply did not change
        time.sleep(3)
        return [text for text in webhook if "demo-minilm-cached" in text]

    (alert, *_) = wait_for(stale_alerts, 120, "the no-successful-run alert")
    assert alert.startswith("demo-minilm-cached has had no successful run for 20 seconds")
    assert "finetune/demo-minilm-cached" in alert
    assert not [text for text in webhook if "tiny-healthy" in text]
