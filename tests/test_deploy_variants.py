"""deploy/prefect.docker.yaml and deploy/prefect.kubernetes.yaml: valid for `prefect deploy`, the same
deployments as prefect.yaml (read from it, so a deployment added there is missed here until copied), the
image from the environment and nothing secret in what `prefect deploy` would store."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "docker": ROOT / "deploy" / "prefect.docker.yaml",
    "kubernetes": ROOT / "deploy" / "prefect.kubernetes.yaml",
}
POOLS = {"docker": "emag-sync-docker", "kubernetes": "emag-sync-k8s"}
SECRET_NAME = re.compile(r"PASSWORD|USERNAME|SECRET|TOKEN|API_KEY|DATABASE_URL|CREDENTIAL", re.IGNORECASE)


def _load(path: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def _without_pool(deployment: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in deployment.items() if key != "work_pool"}


BASE = _load(ROOT / "prefect.yaml")


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_variant_is_valid_for_prefect_deploy(kind: str) -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(_load(VARIANTS[kind]))
    assert model.name == BASE["name"]
    assert {d.work_pool.name for d in model.deployments if d.work_pool} == {POOLS[kind]}
    assert all(d.work_pool for d in model.deployments)


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_variant_carries_prefect_yamls_deployments(kind: str) -> None:
    variant = _load(VARIANTS[kind])
    base = {d["name"]: d for d in BASE["deployments"]}
    ours = {d["name"]: d for d in variant["deployments"]}
    assert sorted(ours) == sorted(base), f"{VARIANTS[kind].name}: copy prefect.yaml's deployments"
    for name, deployment in base.items():
        assert ours[name]["entrypoint"] == deployment["entrypoint"], name
        # parameters, schedules, concurrency, tags, description: everything but where it runs
        assert _without_pool(ours[name]) == _without_pool(deployment), name


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_runs_from_the_image_with_nothing_secret_stored(kind: str) -> None:
    variant = _load(VARIANTS[kind])
    assert variant.get("build") is None and variant.get("push") is None  # the image is built beforehand
    for deployment in variant["deployments"]:
        job = deployment["work_pool"]["job_variables"]
        assert job["image"] == "{{ $EMAG_SYNC_IMAGE }}", deployment["name"]
        # `prefect deploy` resolves {{ prefect.blocks.* }} and {{ prefect.variables.* }} and stores the
        # values in the deployment: a secret there would be shown in plain text on its Configuration tab.
        assert "prefect.blocks" not in json.dumps(job) and "prefect.variables" not in json.dumps(job)
        for variable in job.get("env", {}):
            assert not SECRET_NAME.search(variable), f"{deployment['name']}: {variable} in job_variables"


def test_pool_env_placeholder_is_resolved_by_the_worker_per_run(prefect_harness) -> None:
    """What the README puts on the work pool (its env's default, a Secret block placeholder) is resolved by
    the worker for each run, against the server, and merged with a deployment's env instead of replaced."""
    import asyncio
    import uuid

    from prefect.blocks.system import Secret
    from prefect.workers.base import BaseJobConfiguration

    block = f"emag-sync-database-url-{uuid.uuid4().hex[:8]}"
    url = "postgresql+psycopg://sync:s3cret@db.internal:5432/emag"
    Secret(value=url).save(block)
    template = {
        "job_configuration": {"env": "{{ env }}", "command": "{{ command }}"},
        "variables": {
            "type": "object",
            "properties": {
                "env": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "default": {"EMAG_SYNC_DATABASE_URL": f"{{{{ prefect.blocks.secret.{block} }}}}"},
                },
                "command": {"type": "string"},
            },
        },
    }
    deployment_env = _load(VARIANTS["docker"])["deployments"][0]["work_pool"]["job_variables"]["env"]
    config = asyncio.run(BaseJobConfiguration.from_template_and_values(template, {"env": deployment_env}))
    assert config.env == {"EMAG_SYNC_DATABASE_URL": url, **deployment_env}
