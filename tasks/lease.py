"""One engine per run directory: a lease that lives exactly as long as the process holding it.

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

from tasks.errors import EmbedforgeError

LOCK_FILE = ".engine.lock"


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
