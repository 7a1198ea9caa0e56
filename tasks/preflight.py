"""The flow's first step: the database reachable, each account free to sync and answering one count."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import task
from prefect.cache_policies import NO_CACHE

from emag_sync.accounts import Account
from emag_sync.api import CatalogueCount, open_client
from emag_sync.api.credentials import resolve_account_config
from emag_sync.db import engine_from_settings
from emag_sync.errors import (
    ConfigError,
    EmagApiError,
    EmagAuthError,
    EmagSyncError,
    EmagUnavailableError,
    MissingCredentialsError,
    SyncLockedError,
)
from emag_sync.locks import check_unlocked
from emag_sync.redact import redact_url
from emag_sync.registry import resolve_accounts
from emag_sync.runs import succeeded_in_flow_run
from emag_sync.settings import AccountConfig, Settings, get_settings
from tasks.outcomes import run_step


@dataclass(frozen=True)
class Preflight:
    """What the checks found: the accounts that passed, each one's ``product_offer/count`` (the read starts
    from it), and the one-line cause for each account that did not (the others sync all the same).

    An account whose lock was held by another sync that this one waits for has no count here: its
    sync counts once it holds the lock.
    """

    accounts: list[Account]  # the ones that passed, in the run's order
    counts: dict[str, CatalogueCount]  # by account name
    failures: dict[str, str] = field(default_factory=dict)  # by account name


def preflight(
    settings: Settings,
    selection: str,
    *,
    seller: str | None = None,
    wait_for_lock: bool = False,
    flow_run_id: str | None = None,
) -> Preflight:
    """Fail fast, in one line naming the setting, before anything is written.

    The database (EMAG_SYNC_DATABASE_URL) and the accounts named (an unknown or disabled name fails the
    run), then per account: its credentials (named by variable), the sync lock (before any eMAG request,
    so a second sync never spends the first one's budget) and one ``count`` (a wrong API URL, refused
    credentials or a non-whitelisted IP). An account that fails is left out with its cause, and the others
    sync; when none passes, its cause (or all of them) is raised. An account this flow run already synced
    (an earlier attempt of a Retry) passes unchecked: its sync skips it, so eMAG is not asked about it.
    """
    problems: dict[str, EmagSyncError] = {}
    engine = engine_from_settings(settings)
    free: list[Account] = []
    try:
        named = resolve_accounts(engine, selection, seller=seller, settings=settings)
        done = [
            account for account in named if succeeded_in_flow_run(engine, account, flow_run_id) is not None
        ]
        configs: dict[Account, AccountConfig] = {}
        for account in named:
            if account in done:
                continue
            try:
                configs[account] = resolve_account_config(settings, account)
            except MissingCredentialsError as exc:
                problems[account.name] = exc
        for account in configs:  # every lock before any request, so a refused sync spends no budget
            try:
                check_unlocked(engine, account)
                free.append(account)
            except SyncLockedError as exc:
                if not wait_for_lock:
                    problems[account.name] = exc  # the sync that waits counts once it holds the lock
    finally:
        engine.dispose()
    counts: dict[str, CatalogueCount] = {}
    for account in free:
        try:
            counts[account.name] = check_api(settings, configs[account])
        except EmagSyncError as exc:
            problems[account.name] = exc
    passed = [account for account in named if account.name not in problems]  # `done` among them
    if not passed and problems:
        if len(problems) == 1:
            raise next(iter(problems.values()))
        raise ConfigError("; ".join(str(exc) for exc in problems.values()))
    return Preflight(passed, counts, {name: str(exc) for name, exc in problems.items()})


def check_api(settings: Settings, config: AccountConfig) -> CatalogueCount:
    """One ``count`` (paced like the sync's requests); a failure names the setting and the URL."""
    account = config.account
    try:
        with open_client(settings, config) as client:
            return client.count()
    except EmagAuthError as exc:
        raise ConfigError(
            f"{exc.detail}; check {account.env_prefix}_USERNAME and {account.env_prefix}_PASSWORD, and that "
            f"{redact_url(config.api_url)} ({settings.api_url_setting(account)}) is {account.platform.name}'s API",
            account=account,
        ) from None
    except EmagApiError as exc:
        if isinstance(exc, EmagUnavailableError) and exc.status_code is not None:
            raise  # eMAG answered 5xx/429 through every retry: an outage, not a setting to fix
        raise ConfigError(
            f"{exc.detail}; check {settings.api_url_setting(account)} ({redact_url(config.api_url)})",
            account=account,
        ) from None


@task(name="preflight", task_run_name="preflight", cache_policy=NO_CACHE)
def preflight_task(
    selection: str, seller: str | None = None, wait_for_lock: bool = False, flow_run_id: str | None = None
) -> Preflight:
    """Prefect task: the checks against the configured database and eMAG; Failed in one line otherwise."""
    return run_step(
        preflight,
        get_settings(),
        selection,
        seller=seller,
        wait_for_lock=wait_for_lock,
        flow_run_id=flow_run_id,
    )
