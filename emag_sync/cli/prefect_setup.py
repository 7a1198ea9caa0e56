"""One idempotent set-up of a Prefect server for emag-sync: Secret blocks, work pool, alerts (and the removal
of the per-account rate limits earlier versions created)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from pydantic import SecretStr

from emag_sync.accounts import Account, AccountType, legacy_account
from emag_sync.api.credentials import secret_block_name
from emag_sync.cli.alerts import AlertOptions, register_alerts
from emag_sync.cli.serve import deployment_specs
from emag_sync.errors import ConfigError
from emag_sync.redact import redact_url
from emag_sync.settings import Settings, credential_variable

WORK_POOL_NAME = "emag-sync-pool"
WORK_POOL_TYPE = "process"
# Earlier versions paced each account through a Prefect global concurrency limit of this name, asked once
# per eMAG request; the pace now lives in the database (emag_sync.api.lease), so those limits are removed.
OLD_RATE_LIMIT_PREFIX = "emag-api-"


def _accounts(settings: Settings) -> list[Account]:
    """The registered accounts (the database's), and main and fbe: their blocks and limits as before."""
    from emag_sync.db import engine_from_settings
    from emag_sync.registry import list_accounts

    legacy = [legacy_account(kind) for kind in AccountType]
    engine = engine_from_settings(settings)
    try:
        registered = list_accounts(engine)
    finally:
        engine.dispose()
    return legacy + [account for account in registered if not account.legacy]


def _enabled_accounts(settings: Settings) -> list[Account]:
    """The accounts whose silence the alerts watch: the enabled registered ones, and main and fbe until
    they are registered (on their first use)."""
    from emag_sync.db import engine_from_settings
    from emag_sync.registry import list_accounts

    engine = engine_from_settings(settings)
    try:
        registered = list_accounts(engine)
    finally:
        engine.dispose()
    names = {account.name for account in registered}
    legacy = [legacy_account(kind) for kind in AccountType if kind.value not in names]
    return legacy + [account for account in registered if account.enabled]


def _env_credentials(settings: Settings) -> Iterator[tuple[str, str, str | None]]:
    """(block name, environment variable, value or None) for each credential of each account."""
    for account in _accounts(settings):
        for field in ("username", "password"):
            value = settings.credential(account, field)
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            yield secret_block_name(account, field), credential_variable(account, field), plain


def _secret_blocks(settings: Settings) -> list[str]:
    from prefect.blocks.system import Secret
    from prefect.utilities.asyncutils import run_coro_as_sync

    done = []
    for name, variable, value in _env_credentials(settings):
        if value is None:
            done.append(f"Secret block {name}: skipped, {variable} not set (an existing block is kept)")
            continue
        try:
            block: Secret[Any] = run_coro_as_sync(Secret.aload(name))
            existing = block.value.get_secret_value()
        except ValueError:
            existing = None
        if existing == value:
            done.append(f"Secret block {name}: unchanged")
            continue
        run_coro_as_sync(Secret(value=SecretStr(value)).asave(name, overwrite=True))
        done.append(
            f"Secret block {name}: {'updated' if existing is not None else 'created'} from {variable}"
        )
    return done


def _old_rate_limits(settings: Settings) -> list[str]:
    """Delete the ``emag-api-<account>`` global concurrency limits of earlier versions (nothing asks them
    any more); one line per limit removed, none when there were none."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    done = []
    with get_client(sync_client=True) as client:
        for account in _accounts(settings):
            name = f"{OLD_RATE_LIMIT_PREFIX}{account.name}"
            try:
                client.delete_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                continue
            done.append(
                f"global concurrency limit {name}: removed (eMAG pacing now holds each account's budget in "
                "the database)"
            )
    return done


def _work_pool(name: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=WORK_POOL_TYPE,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
            return [f"work pool {name}: created (type {WORK_POOL_TYPE})"]
    if pool.type != WORK_POOL_TYPE:
        return [
            f"work pool {name}: exists with type {pool.type}, left as it is; a worker of prefect.yaml's "
            f"deployments needs a {WORK_POOL_TYPE} pool (delete this one to have it created)"
        ]
    return [f"work pool {name}: exists (type {pool.type})"]


def setup_prefect(
    settings: Settings,
    *,
    work_pool: str = WORK_POOL_NAME,
    secrets: bool = True,
    alerts: AlertOptions = AlertOptions(),
) -> list[str]:
    """Create or update the Secret blocks (from the environment), the work pool and, given a notification
    target, the alerting automations (emag_sync/cli/alerts.py); remove the per-account rate limits of
    earlier versions.

    Safe to run again; returns one line per object saying what happened. Never returns a secret value.
    """
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url
    if not api_url:
        raise ConfigError(
            "PREFECT_API_URL is not set: start a server (`prefect server start`) and "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api first"
        )
    try:
        done = [f"Prefect API: {redact_url(api_url)}"]
        done += _secret_blocks(settings) if secrets else ["Secret blocks: left as they are (--no-secrets)"]
        done += _old_rate_limits(settings)
        done += _work_pool(work_pool)
        accounts = _enabled_accounts(settings) if alerts.has_target else []
        done += register_alerts(alerts, deployment_specs(), accounts)
    except httpx.TransportError as exc:
        raise ConfigError(
            f"Prefect API at {redact_url(api_url)} is unreachable ({type(exc).__name__}); "
            "is `prefect server start` running?"
        ) from exc
    return done
