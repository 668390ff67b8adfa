"""A killed `embedforge run` costs only the steps since its last complete checkpoint, and leaves no server behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import child_pids, complete_checkpoints, embedded_env, trainer_state

pytestmark = pytest.mark.slow  # a real run, killed, and resumed in subprocesses
EMBEDFORGE = str(Path(sys.executable).parent / "embedforge")


def _training(recipe: Path, tmp_path: Path, until: str, **popen) -> subprocess.Popen:
    """`embedforge run` started in the background, returned once `until` (a glob under runs/) exists."""
    popen = popen or {"stdout": open(tmp_path / "first.log", "w"), "stderr": subprocess.STDOUT}
    command = [EMBEDFORGE, "run", str(recipe), "--output-dir", str(tmp_path / "runs")]
    process = subprocess.Popen(command, env=embedded_env(tmp_path), **popen)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "runs").glob(until)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError((tmp_path / "first.log").read_text()[-3000:] if "stdout" not in popen else "")
        time.sleep(0.05)
    return process


FIRST_CHECKPOINT = "tiny-test/*/checkpoints/checkpoint-*/trainer_state.json"


def test_killed_run_resumes_from_its_last_complete_checkpoint(recipe_dict, tmp_path, write_recipe):
    recipe_dict["train"]["args"].update(
        {"max_steps": 60, "save_strategy": "steps", "save_steps": 2, "save_total_limit": 3, "logging_steps": 50}
    )
    env = embedded_env(tmp_path)
    first = _training(write_recipe(recipe_dict), tmp_path, FIRST_CHECKPOINT)
    server = [pid for pid in child_pids(first.pid) if "uvicorn" in Path(f"/proc/{pid}/cmdline").read_text()]
    first.send_signal(signal.SIGKILL)  # a worker or pod gone: no clean-up of any kind
    first.wait()
    (run_dir,) = (tmp_path / "runs" / "tiny-test").iterdir()
    assert not (run_dir / "model").exists()

    # The temporary Prefect server did not outlive the killed command.
    for _ in range(50):
        if not any(Path(f"/proc/{pid}").exists() for pid in server):
            break
        time.sleep(0.1)
    assert server and not any(Path(f"/proc/{pid}").exists() for pid in server)

    # The next checkpoint, cut off while saving (the trainer writes trainer_state.json last). The kill
    # often lands inside that save already; when it did not, one is cut off here the same way.
    newest = complete_checkpoints(run_dir / "checkpoints")[-1]
    step = int(newest.name.split("-")[1])
    torn = run_dir / "checkpoints" / f"checkpoint-{step + 2}"
    if not torn.exists():
        shutil.copytree(newest, torn)
        (torn / "trainer_state.json").unlink()
        (torn / "model.safetensors").write_bytes(b"half a file")

    resumed = subprocess.run([EMBEDFORGE, "resume", str(run_dir)], env=env, capture_output=True, text=True, timeout=600)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert f"Skipping {torn}: it was not saved whole" in output
    assert f"Resuming from {run_dir / 'checkpoints' / newest.name}" in output
    final = trainer_state(complete_checkpoints(run_dir / "checkpoints")[-1])
    assert final["global_step"] == 60  # the same total as an uninterrupted run
    assert min(e["step"] for e in final["log_history"] if "loss" in e and e["step"] > step) > step
    assert (run_dir / "model" / "model.safetensors").exists() and "Push: published to" in output


def test_a_second_engine_on_a_run_being_trained_refuses_and_the_first_finishes(recipe_dict, tmp_path, write_recipe):
    recipe_dict["train"]["args"].update(
        {"max_steps": 800, "save_strategy": "steps", "save_steps": 20, "save_total_limit": 2, "logging_steps": 100}
    )
    env = embedded_env(tmp_path)
    first = _training(write_recipe(recipe_dict), tmp_path, FIRST_CHECKPOINT)
    (run_dir,) = (tmp_path / "runs" / "tiny-test").iterdir()

    # The same run started again while the first engine trains it (as a rescheduled flow run would be).
    second = subprocess.run([EMBEDFORGE, "resume", str(run_dir)], env=env, capture_output=True, text=True, timeout=300)
    assert first.poll() is None, "the first engine must still be training for this test to mean anything"
    assert second.returncode == 1 and "Traceback" not in second.stdout + second.stderr
    refusal = [line for line in second.stderr.splitlines() if line.startswith(f"{run_dir}: another engine is running")]
    assert len(refusal) == 1 and f"pid {first.pid}" in refusal[0], second.stderr[-2000:]
    assert "Training started" not in second.stdout + second.stderr

    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    output = (tmp_path / "first.log").read_text()
    assert "Push: published to" in output
    final = trainer_state(complete_checkpoints(run_dir / "checkpoints")[-1])
    assert final["global_step"] == 800  # one engine's steps, not interleaved with a second's
    (release,) = [p for p in (tmp_path / "published").iterdir() if p.name != "latest"]


def test_ctrl_c_during_training_cancels_the_run_cleanly_and_it_resumes(recipe_dict, tmp_path, write_recipe):
    import sqlite3

    recipe_dict["train"]["args"].update(
        {"max_steps": 800, "save_strategy": "steps", "save_steps": 1000, "logging_steps": 100}
    )
    home, env, runs = tmp_path / "prefect-home", embedded_env(tmp_path), tmp_path / "runs"
    # As a terminal runs it: its own process group, and Ctrl-C is SIGINT to the whole group.
    terminal = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "start_new_session": True}
    first = _training(write_recipe(recipe_dict), tmp_path, "tiny-test/*/checkpoints", **terminal)
    time.sleep(3)  # well into training
    server = [pid for pid in child_pids(first.pid) if "uvicorn" in Path(f"/proc/{pid}/cmdline").read_text()]
    os.killpg(first.pid, signal.SIGINT)
    out, err = first.communicate(timeout=120)

    assert first.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err, err[-3000:]
    (run_dir,) = (runs / "tiny-test").iterdir()
    lines = [line for line in err.splitlines() if line.startswith("Interrupted:")]
    assert len(lines) == 1 and f"Continue it with `embedforge resume {run_dir}`" in lines[0], err[-2000:]
    (checkpoint,) = complete_checkpoints(run_dir / "checkpoints")  # saved at the step Ctrl-C stopped at, though not due
    assert f"training stopped on Ctrl-C after step {checkpoint.name.split('-')[1]}" in lines[0]
    assert server and not any(Path(f"/proc/{pid}").exists() for pid in server)  # the server stopped with it
    with sqlite3.connect(home / "prefect.db") as db:
        ((state, name),) = db.execute("SELECT state_type, state_name FROM flow_run").fetchall()
    assert (state, name) == ("CANCELLED", "Cancelled")

    resumed = subprocess.run([EMBEDFORGE, "resume", str(run_dir)], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from {checkpoint}" in resumed.stdout + resumed.stderr
    assert "Push: published to" in resumed.stdout


def test_sigterm_during_training_ends_like_ctrl_c_with_its_one_line(recipe_dict, tmp_path, write_recipe):
    recipe_dict["train"]["args"].update(
        {"max_steps": 800, "save_strategy": "steps", "save_steps": 1000, "logging_steps": 100}
    )
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    first = _training(write_recipe(recipe_dict), tmp_path, "tiny-test/*/checkpoints", **pipes)
    time.sleep(3)
    os.kill(first.pid, signal.SIGTERM)  # a supervisor's stop: systemd, `timeout`, a closed terminal
    out, err = first.communicate(timeout=120)

    assert first.returncode == 130 and "Traceback" not in out + err, err[-3000:]
    (run_dir,) = (tmp_path / "runs" / "tiny-test").iterdir()
    lines = [line for line in err.splitlines() if line.startswith("Interrupted:")]
    assert len(lines) == 1 and f"Continue it with `embedforge resume {run_dir}`" in lines[0], err[-2000:]
    assert "training stopped on SIGTERM after step" in lines[0]
    assert complete_checkpoints(run_dir / "checkpoints")  # stopped at a step, and saved there
