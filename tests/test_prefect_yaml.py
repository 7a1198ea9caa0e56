"""prefect.yaml parses as Prefect reads it and names flows, parameters and schedules that exist."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow

from emag_sync.cli.serve import PREFECT_YAML, deployment_specs, load_entrypoint, runner_deployments
from emag_sync.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SPECS = deployment_specs()
BY_NAME = {spec["name"]: spec for spec in SPECS}
ROUND_MINUTES = {0, 30}


def _ids(specs: list[dict[str, Any]]) -> list[str]:
    return [spec["name"] for spec in specs]


def test_prefect_yaml_is_valid_for_prefect_deploy() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))
    assert model.name == "emag-sync"
    assert model.pull and "prefect.deployments.steps.set_working_directory" in model.pull[0]
    assert sorted(d.name or "" for d in model.deployments) == [
        "dq-check",
        "sync-accounts",
        "sync-all",
        "sync-both",
        "sync-fbe",
        "update-price",
        "update-prices-bulk",
        "update-stock",
        "update-stock-bulk",
    ]
    assert {d.work_pool.name for d in model.deployments if d.work_pool} == {"emag-sync-pool"}
    assert all(d.work_pool for d in model.deployments)


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
def test_entrypoint_names_an_existing_prefect_flow(spec: dict[str, Any]) -> None:
    file_path, _, function = spec["entrypoint"].partition(":")
    assert (ROOT / file_path).is_file(), f"{spec['name']}: {file_path} does not exist"
    flow = load_entrypoint(spec["entrypoint"])
    assert isinstance(flow, Flow), f"{spec['entrypoint']} is not a Prefect flow"
    assert flow.fn.__name__ == function


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
def test_parameters_match_the_flow_signature(spec: dict[str, Any]) -> None:
    flow = load_entrypoint(spec["entrypoint"])
    signature = inspect.signature(flow.fn)
    given = spec.get("parameters") or {}
    assert set(given) <= set(signature.parameters), f"{spec['name']}: unknown parameters"
    if spec.get("schedules"):
        # A scheduled run has nobody to ask: every required parameter must be given, with a valid value.
        flow.validate_parameters(given)


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
def test_schedules_are_bucharest_crons_off_round_minutes(spec: dict[str, Any]) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    for schedule in spec.get("schedules") or []:
        assert set(schedule) - {"active"} == {"cron", "timezone"}, f"{spec['name']}: only cron schedules"
        assert schedule["timezone"] == "Europe/Bucharest"
        CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # raises when invalid
        minute = schedule["cron"].split()[0]
        assert minute.isdigit() and int(minute) not in ROUND_MINUTES, f"{spec['name']}: round minute {minute}"


def test_schedules_and_parameters_per_deployment() -> None:
    # Scheduled syncs that meet each other on one account wait for the lock instead of failing.
    assert BY_NAME["sync-both"]["parameters"] == {"accounts": "both", "options": {"wait_for_lock": True}}
    assert BY_NAME["sync-fbe"]["parameters"] == {"accounts": "fbe", "options": {"wait_for_lock": True}}
    assert BY_NAME["dq-check"]["schedules"]
    assert not BY_NAME["update-price"].get("schedules")
    assert not BY_NAME["update-prices-bulk"].get("schedules")
    assert not BY_NAME["update-stock"].get("schedules")
    assert not BY_NAME["update-stock-bulk"].get("schedules")
    # FBE alone runs more often than the daily sync of both accounts.
    assert BY_NAME["sync-both"]["schedules"][0]["cron"].split()[1].isdigit()
    assert "/" in BY_NAME["sync-fbe"]["schedules"][0]["cron"].split()[1]


def test_sync_all_ships_switched_off_and_its_children_have_a_deployment() -> None:
    # An install syncing main and fbe through sync-both keeps exactly its runs until sync-all is switched on.
    assert [s.get("active") for s in BY_NAME["sync-all"]["schedules"]] == [False]
    assert BY_NAME["sync-all"]["parameters"]["accounts"] == "all"
    from tasks.fan_out import SYNC_ACCOUNTS_DEPLOYMENT

    flow_name, _, deployment = SYNC_ACCOUNTS_DEPLOYMENT.partition("/")
    assert load_entrypoint(BY_NAME[deployment]["entrypoint"]).name == flow_name
    served = {d.name: d for d in runner_deployments(["sync-all"])}
    assert [s.active for s in served["sync-all"].schedules] == [False]


@pytest.mark.parametrize("name", ["sync-both", "sync-fbe", "sync-all"])
def test_sync_deployments_allow_one_run_at_a_time(name: str) -> None:
    assert BY_NAME[name]["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}


def test_serve_builds_the_same_deployments_from_prefect_yaml() -> None:
    served = {deployment.name: deployment for deployment in runner_deployments()}
    assert set(served) == set(BY_NAME)
    for name, spec in BY_NAME.items():
        crons = [(s.schedule.cron, s.schedule.timezone) for s in served[name].schedules]
        assert crons == [(s["cron"], s["timezone"]) for s in spec.get("schedules") or []]
        assert served[name].parameters == (spec.get("parameters") or {})
    assert served["sync-fbe"].concurrency_limit == 1
    with pytest.raises(ConfigError, match="no deployment named nope"):
        runner_deployments(["nope"])
