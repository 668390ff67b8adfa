"""A run directory holds one run: one engine at a time, and the inputs it started with.

One engine per run directory: a lease that lives exactly as long as the process holding it.

Two engines in one run directory would train over each other's checkpoints and publish one release
twice. That happens when a run is rescheduled while its first worker still runs (a heartbeat
threshold shorter than the workers' heartbeats, a network split). The lease is an exclusive flock
on ``<run>/.engine.lock``: the kernel drops it when the holder exits however it ends, SIGKILL
included, so a crashed run never leaves a stale lock, and Linux applies it across NFS clients too.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from prefect.runtime import flow_run

from embedforge.errors import EmbedforgeError

LOCK_FILE = ".engine.lock"
INPUTS_FILE = "inputs.json"  # what the run was started with; resume compares against it


def _holder(lock: Path) -> str:
    try:
        who = json.loads(lock.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {who.get('pid')} on {who.get('host')} (flow run {who.get('flow_run_id')})"


@contextmanager
def one_engine(run_dir: Path):
    """Hold the run directory's lease while the body runs; refuse at once when another engine holds it."""
    lock = run_dir / LOCK_FILE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EmbedforgeError(
            f"{run_dir}: another engine is running this run ({_holder(lock)}); not starting a second one. "
            f"Let it finish, or stop it and run `embedforge resume {run_dir}`"
        ) from None
    try:
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "flow_run_id": flow_run.id}
        os.write(fd, json.dumps(holder).encode())
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def check_same_inputs(run_dir: Path, recipe_hash: str, fingerprints: dict[str, str] | None = None) -> None:
    """Refuse to continue a run whose recipe or data changed since it started; record them on the first start.

    A resumed run publishes what it trained: an edited recipe.yaml or new data would be published under
    a name, hash and card that did not make the model.
    """
    path = run_dir / INPUTS_FILE
    recorded = json.loads(path.read_text()) if path.exists() else {}
    changed = []
    if recorded.get("recipe_hash") not in (None, recipe_hash):
        changed.append("its recipe.yaml")
    if fingerprints is not None and recorded.get("data") not in (None, fingerprints):
        changed.append("its data (" + ", ".join(sorted(_differ(recorded["data"], fingerprints))) + ")")
    if changed:
        raise EmbedforgeError(
            f"{run_dir}: {' and '.join(changed)} changed since this run started, so resuming would publish a model "
            "under inputs that did not make it. Start a new run: `embedforge run <recipe>`"
        )
    path.write_text(json.dumps({"recipe_hash": recipe_hash, "data": fingerprints or recorded.get("data")}, indent=2))


def _differ(before: dict[str, str], now: dict[str, str]) -> set[str]:
    return {label for label in set(before) | set(now) if before.get(label) != now.get(label)}
