"""``emag-sync serve``: prefect.yaml's deployments served from this process (``flow.serve``), no work pool.

Schedules, parameters and concurrency limits are read from prefect.yaml so they are declared once.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]

from emag_sync.errors import ConfigError

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The ``deployments`` of prefect.yaml, as written."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    specs: list[dict[str, Any]] = document.get("deployments") or []
    return specs


def load_entrypoint(entrypoint: str) -> Any:
    """``flows/sync.py:emag_product_sync`` to the object it names, imported as a module of this package."""
    file_path, _, attribute = entrypoint.partition(":")
    module = importlib.import_module(file_path.removesuffix(".py").replace("/", "."))
    return getattr(module, attribute)


def runner_deployments(names: Sequence[str] = (), path: Path = PREFECT_YAML) -> list[Any]:
    """RunnerDeployments for prefect.yaml's deployments (all, or those named), with its schedules."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.schedules import Cron

    specs = deployment_specs(path)
    unknown = set(names) - {spec["name"] for spec in specs}
    if unknown:
        raise ConfigError(f"no deployment named {', '.join(sorted(unknown))} in {path.name}")
    deployments = []
    for spec in specs:
        if names and spec["name"] not in names:
            continue
        limit = spec.get("concurrency_limit")
        deployments.append(
            load_entrypoint(spec["entrypoint"]).to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters") or {},
                schedules=[
                    Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
                    for s in spec.get("schedules") or []
                ],
                concurrency_limit=ConcurrencyLimitConfig(**limit) if isinstance(limit, dict) else limit,
            )
        )
    return deployments


def serve(names: Sequence[str] = ()) -> None:
    """Register the deployments and run their scheduled and UI-triggered runs here until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*runner_deployments(names))
