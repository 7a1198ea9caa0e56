"""The eMAG Marketplace API client: open one per account with ``open_client``."""

from __future__ import annotations

import httpx

from emag_sync.accounts import Account
from emag_sync.api.client import DEFAULT_LOOK_AHEAD, ClientStats, EmagClient, RequestCounters
from emag_sync.api.credentials import resolve_account_config
from emag_sync.api.global_limit import shared_limiter_for
from emag_sync.api.paging import CatalogueCount, Page
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
    settings: Settings | AccountConfig,
    account: Account | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    look_ahead: int = DEFAULT_LOOK_AHEAD,
) -> EmagClient:
    """The one way to open an eMAG client for an account: its credentials (Secret blocks or the
    environment) and its shared rate budget (Prefect's global limit when set up, else this process's).

    Pass ``settings`` and the ``account``, or an ``AccountConfig`` already resolved (the preflight resolves
    credentials once). ``transport`` is for tests (the sandbox in-process).
    """
    if isinstance(settings, AccountConfig):
        config = settings
    else:
        if account is None:
            raise TypeError("open_client(settings, account): the account is required with settings")
        config = resolve_account_config(settings, account)
    return EmagClient(config, limiter=shared_limiter_for(config), transport=transport, look_ahead=look_ahead)
