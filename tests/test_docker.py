"""docker/: no Docker engine runs here, so these check what can be checked without one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"


def test_compose_has_server_on_postgres_ui_and_a_gpu_worker():
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "server", "worker"} <= set(services)
    assert "postgresql+asyncpg://" in services["server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "4200:4200" in services["server"]["ports"]
    worker = services["worker"]
    assert worker["environment"]["PREFECT_API_URL"] == "http://server:4200/api"
    assert worker["build"]["dockerfile"] == "docker/Dockerfile"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert any(v.endswith(":/data/hf-cache") for v in worker["volumes"])


def test_dockerfile_is_a_cuda_worker_running_as_a_user_with_the_hf_cache_on_a_volume():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:[\w.-]+-runtime-", text, re.M)
    assert "HF_HOME=/data/hf-cache" in text and 'VOLUME ["/data/hf-cache"' in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "COPY pyproject.toml" in text and "pip install ." in text
    assert '"worker", "start", "--pool", "gpu"' in text and '"--limit", "1"' in text


def test_docker_pool_job_variables_request_gpus_the_way_docker_py_reads_them():
    docker_types = pytest.importorskip("docker.types")
    variables = yaml.safe_load((DOCKER / "docker-gpu-job-variables.yaml").read_text())
    assert "gpus" not in variables  # prefect-docker ignores it silently
    # prefect-docker passes container_create_kwargs to containers.create(), which builds this HostConfig.
    host_config = docker_types.HostConfig(version="1.44", **variables["container_create_kwargs"])
    assert host_config["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}
    ]


def test_kubernetes_template_adds_a_gpu_limit_variable():
    from prefect.utilities.templating import apply_values, find_placeholders

    template = json.loads((DOCKER / "k8s-gpu-base-job-template.json").read_text())
    variables = template["variables"]["properties"]
    used = {p.name for p in find_placeholders(template["job_configuration"])}
    assert used <= set(variables), used - set(variables)
    values = {name: spec["default"] for name, spec in variables.items() if "default" in spec}
    for gpus in (1, 4):
        rendered = apply_values(template["job_configuration"], {**values, "gpu_limit": gpus})
        container = rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
