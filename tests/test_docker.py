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
    # A retried run finds its checkpoints: run directories live on a named volume, not in the container.
    assert "runs:/opt/embedforge/runs" in worker["volumes"] and "runs" in compose["volumes"]


# The NVIDIA driver each CUDA build of torch needs at least (NVIDIA's CUDA toolkit release notes).
MIN_DRIVER = {"cu126": "560", "cu128": "570", "cu129": "575", "cu130": "580"}


def _arg(text: str, name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", text, re.M)
    return value


def test_dockerfile_torch_build_agrees_with_base_image_pyproject_and_readme():
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    text = (DOCKER / "Dockerfile").read_text()
    version, cuda = _arg(text, "TORCH_VERSION"), _arg(text, "TORCH_CUDA")
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    if base.startswith("nvidia/cuda:"):  # a CUDA base must be the same CUDA as torch's, or there are two stacks
        major, minor = re.match(r"nvidia/cuda:(\d+)\.(\d+)", base).groups()
        assert cuda == f"cu{major}{minor}", (base, cuda)
    else:
        assert "cuda" not in base, base  # the torch wheel brings the only CUDA
    assert 'pip install --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" "torch==${TORCH_VERSION}"' in text
    # pip install . must keep that torch: the constraint is in force before it runs.
    assert text.index("ENV PIP_CONSTRAINT=/opt/torch-constraint.txt") < text.index('pip install ".[${EXTRAS}]"')
    pyproject = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())
    # A recipe with merge or export runs on this worker: the image has what those sections import.
    extras = _arg(text, "EXTRAS").split(",")
    assert {"merge", "export"} <= set(extras) <= set(pyproject["project"]["optional-dependencies"]), extras
    (torch_req,) = [Requirement(r) for r in pyproject["project"]["dependencies"] if r.startswith("torch")]
    assert torch_req.specifier.contains(version), (torch_req, version)
    readme = (DOCKER.parent / "docs" / "operations" / "deployments.md").read_text()
    assert f"NVIDIA driver {MIN_DRIVER[cuda]} or newer" in readme and f"torch {version}+{cuda}" in readme


def test_dockerfile_is_a_worker_running_as_a_user_with_cache_and_runs_on_volumes():
    text = (DOCKER / "Dockerfile").read_text()
    assert "HF_HOME=/data/hf-cache" in text and 'VOLUME ["/data/hf-cache", "/opt/embedforge/runs"]' in text
    assert "EMBEDFORGE_OUTPUT_DIR=/opt/embedforge/runs" in text
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
        pod = rendered["job_manifest"]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
        # Run directories on a claim every pod mounts, where the image's EMBEDFORGE_OUTPUT_DIR points.
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert mounts["runs"] == "/opt/embedforge/runs" and claims["runs"] == "embedforge-runs"
