"""``sync-all``'s steps: the enabled accounts in groups, one child flow run per group on the work pool, and
what each account's sync ended as, read back from the children."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.accounts import Account
from emag_sync.db import engine_from_settings
from emag_sync.errors import ConfigError
from emag_sync.escaping import markdown_plain
from emag_sync.options import SyncOptions
from emag_sync.registry import accounts_by_name, resolve_accounts
from emag_sync.run_row import DqStatus, RunRow, RunStatus
from emag_sync.runs import latest_in_flow_run
from emag_sync.settings import Settings, get_settings
from tasks.artifacts import ACCOUNT_OUTCOMES_KEY
from tasks.outcomes import run_step

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

# The deployment that syncs a group of accounts in one process (prefect.yaml).
SYNC_ACCOUNTS_DEPLOYMENT = "emag-product-sync/sync-accounts"
# Polling the children: one Prefect API call per poll for all of them, however many accounts there are.
POLL_SECONDS = 5.0
# How often the parent says where it stands while it waits.
WAITING_NOTE_SECONDS = 60.0
# A finished child's outcome table may reach the server a moment after its final state (its client sends
# in the background): waited for this long before falling back to the run history and the child's state.
OUTCOMES_GRACE_SECONDS = 20.0
# Prefect keeps an idempotency key as text; a group of many long names is hashed to stay short.
MAX_KEY_NAMES = 200
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Child:
    """One child flow run: the accounts it syncs, in the order they were planned."""

    accounts: tuple[str, ...]
    flow_run_id: str
    name: str


@dataclass(frozen=True)
class ChildEnd:
    """Where a child flow run stands once the parent stops waiting (plain values: a Prefect FlowRun cannot
    travel between tasks)."""

    state: str  # the state's name: Completed, Failed, Crashed, Running (not finished in time), ...
    final: bool
    completed: bool
    message: str | None = None


@dataclass(frozen=True)
class AccountOutcome:
    """How one account ended in ``sync-all``: by its child's own account table, else the run history.
    ``cause`` is one line naming the account (None when it succeeded)."""

    account: str
    ok: bool
    cause: str | None
    child: Child
    child_state: str
    run: RunRow | None = None

    @property
    def dq_status(self) -> str:
        return (self.run.dq_status if self.run and self.run.dq_status else None) or "not run"


def plan_groups(accounts: Sequence[Account], accounts_per_run: int) -> list[list[Account]]:
    """The accounts in as few groups of at most ``accounts_per_run`` as will hold them, of even size.

    Round-robin over the accounts' order (the registry's, by name): accounts of one seller or platform,
    named alike, land in different groups, so no child carries one platform's slow day alone. The same
    accounts always give the same groups: a retried parent finds its children again by them.
    """
    if accounts_per_run < 1:
        raise ConfigError(f"accounts_per_run must be at least 1, got {accounts_per_run}")
    if not accounts:
        return []
    count = math.ceil(len(accounts) / accounts_per_run)
    return [list(accounts[start::count]) for start in range(count)]


def group_key(parent_flow_run_id: str, names: Sequence[str]) -> str:
    """The idempotency key of one group's child: a retried parent asks for the same flow run again."""
    joined = ",".join(names)
    if len(names) > MAX_KEY_NAMES or len(joined) > 1000:
        joined = hashlib.sha256(joined.encode()).hexdigest()
    return f"emag-sync-all/{parent_flow_run_id}/{joined}"


def selected_groups(
    settings: Settings, selection: str, seller: str | None, accounts_per_run: int
) -> list[list[Account]]:
    """The registered accounts named (``all``: every enabled one), grouped; the database is the only thing
    asked here: credentials, locks and eMAG are each child's preflight, where the sync runs."""
    engine = engine_from_settings(settings)
    try:
        accounts = resolve_accounts(engine, selection, seller=seller, settings=settings)
    finally:
        engine.dispose()
    if not accounts:
        raise ConfigError("no enabled account to sync: `emag-sync accounts list` shows the registered ones")
    return plan_groups(accounts, accounts_per_run)


def start_children(
    groups: Sequence[Sequence[Account]], options: SyncOptions, parent_flow_run_id: str, deployment: str
) -> list[Child]:
    """A flow run of ``deployment`` per group, created once per parent flow run (idempotency keys).

    On a Retry of the parent the same keys find the children of the first attempt: one that completed is
    left as it is, one that failed or crashed is scheduled again (as the UI's Retry does), so it resumes
    its failed accounts and skips those it already synced.
    """
    from prefect.deployments import run_deployment
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    children = []
    for group in groups:
        names = [account.name for account in group]
        flow_run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync context: not a coroutine
            deployment,
            parameters={"accounts": ",".join(names), "options": options.model_dump(mode="json")},
            timeout=0,
            idempotency_key=group_key(parent_flow_run_id, names),
            tags=["emag-sync-all"],
        )
        child = Child(tuple(names), str(flow_run.id), flow_run.name)
        state = flow_run.state
        if state is not None and state.is_final() and not state.is_completed():
            _schedule_again(flow_run.id)
            logger.info("%s (%s) ended %s before: scheduled again", child.name, ", ".join(names), state.name)
        elif state is not None and state.is_completed():
            logger.info("%s (%s) completed in an earlier attempt: kept", child.name, ", ".join(names))
        else:
            logger.info("%s started for %s", child.name, ", ".join(names))
        children.append(child)
    return children


def _schedule_again(flow_run_id: UUID) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            flow_run_id, Scheduled(name="AwaitingRetry", message="retried by its sync-all parent"), force=True
        )


def wait_for_children(children: Sequence[Child], *, max_wait_seconds: float) -> dict[str, ChildEnd]:
    """Every child's flow run once it is final (one API call per poll for all of them); a child still
    unfinished after ``max_wait_seconds`` is returned as it stands, and counted failed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    ids = [UUID(child.flow_run_id) for child in children]
    deadline = time.monotonic() + max_wait_seconds
    noted = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            runs = {
                str(run.id): run
                for run in client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)), limit=len(ids)
                )
            }
            open_ = [child for child in children if not _final(runs.get(child.flow_run_id))]
            if not open_ or time.monotonic() >= deadline:
                if open_:
                    logger.error(
                        "%s of %s child flow runs did not finish within %s minutes",
                        len(open_), len(children), round(max_wait_seconds / 60),
                    )  # fmt: skip
                return {child_id: _end(run) for child_id, run in runs.items()}
            if time.monotonic() - noted >= WAITING_NOTE_SECONDS:
                noted = time.monotonic()
                waiting = [
                    c for c in open_ if _state_type(runs.get(c.flow_run_id)) in {"SCHEDULED", "PENDING"}
                ]
                logger.info(
                    "%s of %s child flow runs finished; %s not started yet%s",
                    len(children) - len(open_), len(children), len(waiting),
                    " (is a worker polling the deployment's work pool?)" if waiting else "",
                )  # fmt: skip
            time.sleep(POLL_SECONDS)


def _end(run: FlowRun) -> ChildEnd:
    state = run.state
    if state is None:
        return ChildEnd("unknown", final=False, completed=False)
    return ChildEnd(state.name or state.type.value, state.is_final(), state.is_completed(), state.message)


def _state_type(run: FlowRun | None) -> str | None:
    return run.state.type.value if run is not None and run.state is not None else None


def _final(run: FlowRun | None) -> bool:
    return run is not None and run.state is not None and run.state.is_final()


def account_outcomes(
    settings: Settings, children: Sequence[Child], ends: Mapping[str, ChildEnd]
) -> list[AccountOutcome]:
    """Each account's outcome, in the planned order. Succeeded: its child completed, or the run history
    has its sync (and check) succeeded in that child. Otherwise the cause is its child's account table
    (the exact line, preflight failures included), else the run's error, else the child's end. The table
    is the last that reached the server: a retried child that could not write its own (the Prefect API
    busy) leaves the earlier attempt's, so it never outweighs the child's state or the run history."""
    from prefect.client.orchestration import get_client

    lost = ChildEnd("unknown", final=False, completed=False)
    finished = [child for child in children if ends.get(child.flow_run_id, lost).final]
    engine = engine_from_settings(settings)
    try:
        with get_client(sync_client=True) as client:
            tables = _outcome_tables(client, finished)
        registered = accounts_by_name(engine)
        outcomes = []
        for child in children:
            end = ends.get(child.flow_run_id, lost)
            table = tables.get(child.flow_run_id, {})
            for name in child.accounts:
                account = registered.get(name)
                run = latest_in_flow_run(engine, account, child.flow_run_id) if account is not None else None
                outcomes.append(_outcome(name, child, end, table.get(name), run))
        return outcomes
    finally:
        engine.dispose()


def _outcome(
    name: str, child: Child, end: ChildEnd, row: Mapping[str, Any] | None, run: RunRow | None
) -> AccountOutcome:
    def made(cause: str | None) -> AccountOutcome:
        if cause is not None and not cause.startswith(name):  # causes of our own errors name the account
            cause = f"{name}: {cause}"
        return AccountOutcome(name, cause is None, cause, child, end.state, run)

    synced = run is not None and run.status == RunStatus.SUCCEEDED and run.dq_status != DqStatus.FAILED
    if end.completed or synced:  # a completed child synced every account it was given
        return made(None)
    if row is not None and row.get("outcome") != "succeeded":  # the exact cause, preflight's included
        return made(row.get("cause") or "failed")
    if run is not None and run.error:
        return made(run.error)
    if not end.final:
        return made(f"its flow run {child.name} did not finish (state {end.state})")
    return made(f"its flow run {child.name} ended {end.state}" + (f": {end.message}" if end.message else ""))


def _outcome_tables(
    client: SyncPrefectClient, children: Sequence[Child]
) -> dict[str, dict[str, Mapping[str, Any]]]:
    """The account table of each finished child, by flow run id and account name."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    wanted = {child.flow_run_id for child in children}
    found: dict[str, dict[str, Mapping[str, Any]]] = {}
    deadline = time.monotonic() + OUTCOMES_GRACE_SECONDS
    while True:
        missing = [UUID(i) for i in wanted - set(found)]
        if not missing:
            return found
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=missing),
                key=ArtifactFilterKey(any_=[ACCOUNT_OUTCOMES_KEY]),
            )
        )
        # The newest last: a retried child whose earlier table was not deleted still ends on its own.
        for artifact in sorted(artifacts, key=lambda artifact: artifact.created or _EPOCH):
            rows = _rows(artifact.data)
            if artifact.flow_run_id is not None and rows is not None:
                found[str(artifact.flow_run_id)] = {str(row.get("account")): row for row in rows}
        if time.monotonic() >= deadline or set(found) >= wanted:
            return found
        time.sleep(1.0)


def _rows(data: Any) -> list[Mapping[str, Any]] | None:
    """A child's account table as its sync wrote it: Prefect stores the rows as JSON text, their text cells
    made literal for the UI's markdown (read back here)."""
    try:
        rows = json.loads(data) if isinstance(data, str) else data
    except ValueError:
        return None
    if isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
        return [{k: markdown_plain(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    return None


@task(name="plan-groups", task_run_name="plan-groups", cache_policy=NO_CACHE)
def plan_groups_task(selection: str, seller: str | None, accounts_per_run: int) -> list[list[Account]]:
    """Prefect task: the accounts to sync, grouped; Failed in one line on an unknown name or no database."""
    return run_step(selected_groups, get_settings(), selection, seller, accounts_per_run)


@task(name="start-children", task_run_name="start-children", cache_policy=NO_CACHE)
def start_children_task(
    groups: list[list[Account]], options: SyncOptions, parent_flow_run_id: str, deployment: str
) -> list[Child]:
    """Prefect task: one child flow run per group (started once per parent flow run)."""
    return start_children(groups, options, parent_flow_run_id, deployment)


@task(name="wait-for-children", task_run_name="wait-for-children", cache_policy=NO_CACHE)
def wait_for_children_task(children: list[Child], max_wait_seconds: float) -> dict[str, ChildEnd]:
    """Prefect task: where each child flow run ended (or stands, if it outlasted the wait)."""
    return wait_for_children(children, max_wait_seconds=max_wait_seconds)


@task(name="account-outcomes", task_run_name="account-outcomes", cache_policy=NO_CACHE)
def account_outcomes_task(children: list[Child], ends: dict[str, ChildEnd]) -> list[AccountOutcome]:
    """Prefect task: how every account ended, from its child's account table or the run history."""
    return account_outcomes(get_settings(), children, ends)
