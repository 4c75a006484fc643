"""Deployment files: the compose file validates, and the Dockerfile installs what the services run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def compose_command() -> list[str]:
    """`docker compose` (plugin) or `docker-compose` (standalone), whichever is installed."""
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("no docker compose here: the file is checked only where the docker client has compose")


def run_compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **env}
    )


SECRETS = {"BRAINSCAN_SECRET_KEY": "0" * 64, "POSTGRES_PASSWORD": "1" * 32, "REDIS_PASSWORD": "2" * 32}


def test_compose_file_validates_with_every_service() -> None:
    addresses = {"BRAINSCAN_DICOM_ADDRESSES": "10.1.2.3"}
    result = run_compose("--profile", "gpu", "--profile", "dicom", "config", **SECRETS, **addresses)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = {"postgres", "redis", "migrate", "api", "proxy", "worker", "worker-gpu", "dicom"}
    assert set(config["services"]) == services
    assert config["services"]["dicom"]["environment"]["BRAINSCAN_DICOM_ADDRESSES"] == "10.1.2.3"
    assert "ports" not in config["services"]["api"]  # reached through the proxy only
    assert config["services"]["api"]["environment"]["BRAINSCAN_PROXIES"] == "1"
    worker = config["services"]["worker"]
    assert worker["environment"]["BRAINSCAN_BROKER_URL"] == f"redis://:{'2' * 32}@redis:6379/0"
    assert f"brainscan:{'1' * 32}@postgres" in worker["environment"]["BRAINSCAN_DATABASE_URL"]
    assert "--requirepass" in config["services"]["redis"]["command"]
    assert any(
        str(v).endswith("/archive:ro") or (isinstance(v, dict) and v.get("read_only"))
        for v in worker["volumes"]
    )
    assert "noeviction" in config["services"]["redis"]["command"]
    gpu = config["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing: str) -> None:
    """No default session key, database password or password-less Redis."""
    env = {k: v for k, v in {**os.environ, **SECRETS}.items() if k != missing}
    result = subprocess.run([*compose_command(), "config"], cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode != 0 and missing in result.stderr


def test_dockerfile_copies_every_package_the_services_import() -> None:
    text = (REPO / "Dockerfile").read_text()
    for package in ("brainscan", "training", "db", "worker", "api", "migrations", "models"):
        assert f"COPY {package} ./{package}" in text
