"""Cancelling a run from the dashboard leaves nothing running: the real server, a process worker, the API call the
dashboard's Cancel button makes, and the process tree read from /proc.

A process of a cancelled run that lives on (a torchrun rank, a generation thread's process) holds its GPU's memory
and fails the next run on that worker (PrefectHQ/prefect#17593). Each stage that starts work of its own is
cancelled while it runs: training in one process and under torchrun (`devices: 2`, on CPU), export and generation.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, child_pids, complete_checkpoints, live_api, live_cli, live_env, start_worker, stop, wait_for
from llm_server import LocalLLM

pytestmark = pytest.mark.slow
POOL = "cancel-pool"


@pytest.fixture(scope="module")
def worker(live_server, tmp_path_factory):
    """One process worker, as on a GPU machine; its runs write under one output folder."""
    root = tmp_path_factory.mktemp("cancel")
    live_cli(live_server, "prefect", "work-pool", "create", POOL, "--type", "process")
    process = start_worker(live_server, POOL, root / "worker.log", EMBEDFORGE_OUTPUT_DIR=str(root / "runs"))
    yield process, root / "runs"
    stop(process)


def _deploy_and_start(server: str, recipe: dict, folder: Path) -> str:
    recipe["deployment"] = {"work_pool": POOL}
    path = folder / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    live_cli(server, "embedforge", "deploy", str(path))
    started = live_cli(server, "prefect", "deployment", "run", f"finetune/{recipe['name']}").stdout
    return next(line.split()[-1] for line in started.splitlines() if "UUID" in line)


def _tree(pid: int) -> list[int]:
    """Every descendant of pid."""
    found = []
    for child in child_pids(pid):
        found += [child, *_tree(child)]
    return found


def _alive(pids: list[int]) -> list[str]:
    """The command lines of those still running (a zombie has ended: it only waits for its parent to read it)."""
    alive = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                alive.append(Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")[:120])
        except OSError:
            continue
    return alive


def _cancel_and_watch(server: str, flow_run_id: str, worker_pid: int) -> list[str]:
    """Cancel as the dashboard does and wait until the run is Cancelled and nothing it started runs; the processes
    of the run (listed at the moment of cancelling) go in the assertion message."""
    processes = _tree(worker_pid)
    assert processes, "the run has no process on the worker"
    commands = _alive(processes)
    started = time.monotonic()
    live_api(server, f"flow_runs/{flow_run_id}/set_state", {"state": {"type": "CANCELLING"}, "force": True})

    def ended() -> bool:
        state = live_api(server, f"flow_runs/{flow_run_id}")["state"]["type"]
        return state == "CANCELLED" and not _alive(processes)

    try:
        wait_for(ended, 30, "the run Cancelled with no process of it left")
    except AssertionError:
        state = live_api(server, f"flow_runs/{flow_run_id}")["state"]
        raise AssertionError(f"after 30 s: {state['type']}, still running: {_alive(processes)}") from None
    assert time.monotonic() - started <= 30
    return commands


def _released(server: str, run_dir: Path, deployment: str) -> None:
    """The run directory's engine lock and the deployment's concurrency slot are free again."""
    with open(run_dir / ".engine.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError while an engine holds it
    (found,) = live_api(server, "deployments/filter", {"deployments": {"name": {"any_": [deployment]}}})
    limit = found.get("global_concurrency_limit") or {}
    assert limit.get("active_slots", 0) == 0, limit


def _long_training(recipe_dict: dict, name: str, devices: int) -> dict:
    """Training long enough to be cancelled in (a one-process step takes milliseconds; under torchrun on CPU, more)."""
    recipe_dict["name"] = name
    recipe_dict["train"]["devices"] = devices
    steps = 2000 if devices == 1 else 200
    recipe_dict["train"]["args"].update(
        {"max_steps": steps, "save_strategy": "steps", "save_steps": 10, "save_total_limit": 2, "logging_steps": 100}
    )
    return recipe_dict


@pytest.mark.parametrize("devices", [1, 2], ids=["one-process", "torchrun-devices-2"])
def test_cancelling_training_ends_every_process_of_the_run_and_it_resumes(
    live_server, worker, recipe_dict, tmp_path, devices
):
    process, runs = worker
    name = f"tiny-cancel-{devices}"
    flow_run_id = _deploy_and_start(live_server, _long_training(recipe_dict, name, devices), tmp_path)
    checkpoints = wait_for(lambda: list(runs.glob(f"{name}/*/checkpoints")), 240, "a checkpoints folder")[0]
    wait_for(lambda: complete_checkpoints(checkpoints), 240, "a complete checkpoint")
    commands = _cancel_and_watch(live_server, flow_run_id, process.pid)
    run_dir = checkpoints.parent
    _released(live_server, run_dir, name)
    if devices == 1:
        return  # resuming one process after a stop: test_recovery.py
    # The ranks were there when it was cancelled, and are gone now; the run goes on from where they stopped.
    assert sum("embedforge.training.distributed" in c and "torch.distributed.run" not in c for c in commands) == 2
    newest = complete_checkpoints(checkpoints)[-1]
    # As a person at a terminal: `embedforge resume`, then Ctrl-C once it has taken up training again.
    command = [BIN / "embedforge", "resume", str(run_dir)]
    resumed = subprocess.Popen(
        command,
        env=live_env(live_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = []
    for line in resumed.stdout:
        seen.append(line)
        if f"Resuming from {newest}" in line:
            break
    assert f"Resuming from {newest}" in seen[-1], "".join(seen)[-3000:]
    processes = _tree(resumed.pid)
    os.killpg(resumed.pid, signal.SIGINT)
    rest, _ = resumed.communicate(timeout=60)
    assert resumed.returncode == 130 and "Interrupted: data-parallel training stopped on Ctrl-C" in rest, rest[-3000:]
    assert not _alive(processes)


def test_cancelling_export_ends_the_run_and_publishes_nothing(live_server, worker, recipe_dict, tmp_path):
    process, runs = worker
    recipe_dict["name"] = "tiny-cancel-export"
    recipe_dict["train"]["args"]["max_steps"] = 10  # on to the export stage soon
    recipe_dict["export"] = {
        "backends": ["openvino", "openvino-int8"],
        "calibration_texts": 200,
        "throughput_texts": 256,
    }
    flow_run_id = _deploy_and_start(live_server, recipe_dict, tmp_path)

    def exporting() -> bool:
        body = {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}, "name": {"like_": "export-backends"}}}
        return any(run["state_type"] == "RUNNING" for run in live_api(live_server, "task_runs/filter", body))

    wait_for(exporting, 240, "the export stage running")
    _cancel_and_watch(live_server, flow_run_id, process.pid)
    (run_dir,) = (runs / "tiny-cancel-export").iterdir()
    _released(live_server, run_dir, "tiny-cancel-export")
    assert not (Path(recipe_dict["push"]["local_dir"])).exists()


def test_cancelling_generation_ends_the_run_and_sends_no_more_requests(live_server, worker, recipe_dict, tmp_path):
    process, runs = worker
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"page{i}.md").write_text(f"# Page {i}\n\nThe keeper of hall {i} writes a ledger each evening.\n")
    with LocalLLM() as llm:
        llm.state.latency = 1.0  # a slow endpoint: generation takes a minute, long enough to cancel in
        recipe_dict |= {"name": "tiny-cancel-generate", "ingest": {"name": "docs", "keep": ["doc_id"]}}
        recipe_dict["split"] = {"group_by": "doc_id", "test_size": 0.3, "seed": 3}
        recipe_dict["corpus"] = {
            "path": str(docs),
            "generate": {
                "method": "llm",
                "batch_size": 2,
                "workers": 2,
                "llm": {"base_url": llm.url, "model": "local-model", "api_key_env": None},
            },
        }
        flow_run_id = _deploy_and_start(live_server, recipe_dict, tmp_path)
        wait_for(lambda: len(llm.state.completions()) >= 2, 240, "generation sending requests")
        _cancel_and_watch(live_server, flow_run_id, process.pid)
        sent = len(llm.state.completions())
        time.sleep(3)
        assert len(llm.state.completions()) == sent  # nothing of the run still asks the endpoint
    (run_dir,) = (runs / "tiny-cancel-generate").iterdir()
    _released(live_server, run_dir, "tiny-cancel-generate")
