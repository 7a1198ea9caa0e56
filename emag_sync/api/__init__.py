"""The eMAG Marketplace API client: open one per account with ``open_client``."""

from __future__ import annotations

import httpx

from emag_sync.accounts import Account
from emag_sync.api.client import DEFAULT_LOOK_AHEAD, ClientStats, EmagClient, RequestCounters
from emag_sync.api.credentials import resolve_account_config
from emag_sync.api.lease import lease_for
from emag_sync.api.paging import CatalogueCount, Page
from emag_sync.db import database_url
from emag_sync.settings import AccountConfig, Settings

__all__ = [
    "CatalogueCount",
    "ClientStats",
    "EmagClient",
    "Page",
    "RequestCounters",
    "open_client",
]


def open_client(
    settings: Settings,
    account: Account | AccountConfig,
    *,
    transport: httpx.BaseTransport | None = None,
    look_ahead: int = DEFAULT_LOOK_AHEAD,
) -> EmagClient:
    """The one way to open an eMAG client for an account: its credentials (Secret blocks or the
    environment) and its login's budget (this process's limiter, spent only while this process holds the
    login's lease in the configured database; see ``emag_sync.api.lease``).

    Pass the ``account``, or its ``AccountConfig`` already resolved (the preflight resolves credentials
    once). ``transport`` is for tests (the sandbox in-process).
    """
    config = account if isinstance(account, AccountConfig) else resolve_account_config(settings, account)
    budget = lease_for(config, database_url(settings))
    try:
        return EmagClient(config, limiter=budget, transport=transport, look_ahead=look_ahead)
    except BaseException:
        budget.close()
        raise
