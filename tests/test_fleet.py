"""A fleet as an operator runs one: Prefect on PostgreSQL, two process workers on one pool, three models.

Needs PostgreSQL's server binaries (`apt-get install -y postgresql`; .ci/run installs them). The database
runs from a temporary folder under an unprivileged user, on a free port, and is stopped afterwards.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from conftest import _free_port, flow_runs, live_api, live_cli, start_prefect_server, start_worker, stop, wait_for

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
INITDB = shutil.which("initdb") or (PG_BIN and f"{PG_BIN}/initdb")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not INITDB, reason="no PostgreSQL: install it with `apt-get install -y postgresql`"),
]


def _as_database_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user Debian's package creates."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own; yields Prefect's connection URL for it."""
    folder = Path(tempfile.mkdtemp(prefix="embedforge-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    pg_ctl, data, port = str(Path(INITDB).with_name("pg_ctl")), folder / "data", _free_port()
    subprocess.run(
        _as_database_user([INITDB, "-D", str(data), "-U", "prefect", "-A", "trust"]), check=True, capture_output=True
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    subprocess.run(
        _as_database_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/postgres"
    subprocess.run(_as_database_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet_server(postgres, tmp_path_factory):
    process, url = start_prefect_server(
        tmp_path_factory.mktemp("fleet-home"), PREFECT_SERVER_DATABASE_CONNECTION_URL=postgres
    )
    yield url
    stop(process, 30)


class Watch:
    """Samples the server's flow runs while the fleet works: the most running at once, in all and per model."""

    def __init__(self, server: str, deployments: dict[str, str]) -> None:
        self.server, self.deployments = server, deployments
        self.most, self.most_per_model, self.done = 0, dict.fromkeys(deployments.values(), 0), False

    def runs(self) -> list[dict]:
        return flow_runs(self.server, deployment_id={"any_": list(self.deployments)})

    def sample(self) -> None:
        while not self.done:
            running = [run for run in self.runs() if run["state_type"] == "RUNNING"]
            self.most = max(self.most, len(running))
            for deployment_id, name in self.deployments.items():
                count = sum(run["deployment_id"] == deployment_id for run in running)
                self.most_per_model[name] = max(self.most_per_model[name], count)
            time.sleep(0.3)


def test_two_workers_three_models_on_postgres_keep_every_limit(fleet_server, recipe_dict, tmp_path):
    server, names = fleet_server, ["fleet-a", "fleet-b", "fleet-c"]
    live_cli(server, "prefect", "work-pool", "create", "fleet", "--type", "process")
    live_cli(server, "prefect", "work-pool", "set-concurrency-limit", "fleet", "2")  # trainings across the pool
    for name in names:
        recipe = {
            **recipe_dict,
            "name": name,
            "evaluate": {"gates": {}},
            "push": {"local_dir": str(tmp_path / "published" / name)},
            "deployment": {"work_pool": "fleet"},  # concurrency_limit 1 per model, the default
        }
        recipe["train"] = {**recipe_dict["train"], "args": {**recipe_dict["train"]["args"], "max_steps": 20}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    live_cli(server, "embedforge", "deploy", *[str(tmp_path / f"{name}.yaml") for name in names])
    found = live_api(server, "deployments/filter", {"deployments": {"name": {"any_": names}}})
    watch = Watch(server, {d["id"]: d["name"] for d in found})

    for name in [*names, "fleet-a"]:  # fleet-a triggered twice, all at once
        live_cli(server, "prefect", "deployment", "run", f"finetune/{name}")
    sampler = threading.Thread(target=watch.sample, daemon=True)
    sampler.start()
    runs = tmp_path / "runs"  # the volume every worker shares
    workers = [
        # One training per worker (per GPU), as README "Running a fleet" has it: the workers' limits are the
        # hard bound. The pool cap is checked as workers poll, and two polling at once can overshoot it.
        start_worker(server, "fleet", tmp_path / f"worker-{n}.log", limit=1, EMBEDFORGE_OUTPUT_DIR=str(runs))
        for n in (1, 2)
    ]
    try:
        wait_for(lambda: all(r["state_type"] == "COMPLETED" for r in watch.runs()), 600, "all four runs to complete")
    finally:
        watch.done = True
        for worker in workers:
            stop(worker)
    sampler.join()

    logs = "".join((tmp_path / f"worker-{n}.log").read_text() for n in (1, 2))
    assert {run["state_name"] for run in watch.runs()} <= {"Published", "Up to date"}, logs[-3000:]
    assert watch.most <= 2 and max(watch.most_per_model.values()) == 1, (watch.most, watch.most_per_model)
    assert watch.most == 2  # the pool was used to its cap, not run one at a time
    # Every run had its own directory, and each model its own single release.
    assert len(list(runs.glob("fleet-*/*/recipe.yaml"))) == 4
    for name in names:
        releases = [p for p in (tmp_path / "published" / name).iterdir() if p.name != "latest"]
        assert len(releases) == 1 and releases[0].name.startswith(f"{name}-"), releases
