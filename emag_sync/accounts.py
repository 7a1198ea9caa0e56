"""Accounts: an account is a registered name (``app.emag_accounts``, see ``emag_sync.registry``) with a
kind (MAIN or FBE), a platform and its own credentials, catalogue and rate budget."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from emag_sync.platforms import DEFAULT_PLATFORM, Platform

REQUESTS_PER_SECOND = Decimal(3)  # eMAG's per-account budget (emag_sync.limits), as the registry stores it


class AccountType(StrEnum):
    """An account's kind: MAIN (the seller ships) or FBE (Fulfilled by eMAG: eMAG's warehouse ships)."""

    MAIN = "main"
    FBE = "fbe"

    @property
    def label(self) -> str:
        return self.value.upper()


@dataclass(frozen=True)
class Account:
    """One registered account: who it belongs to, where it is, and how fast it may be asked.

    Two installs' worth of history made ``main`` and ``fbe`` (kind = name) the accounts of earlier
    versions; any other name is an account added with ``emag-sync accounts add``.
    """

    name: str
    kind: AccountType
    platform: Platform = DEFAULT_PLATFORM
    seller: str | None = None
    api_url: str | None = None  # an override of the platform's URL (a proxy, the sandbox)
    requests_per_second: Decimal = REQUESTS_PER_SECOND
    enabled: bool = True
    removed_at: datetime | None = None
    created_at: datetime | None = None

    @property
    def title(self) -> str:
        """``bg-main (acme)``: the account as messages, logs and reports name it."""
        return f"{self.name} ({self.seller})" if self.seller else self.name

    @property
    def label(self) -> str:
        """``eMAG MAIN`` / ``eMAG bg-main (acme)`` read as before for the accounts of earlier versions."""
        return self.kind.label if self.legacy else self.title

    @property
    def env_prefix(self) -> str:
        """``EMAG_ACME_BG_MAIN``: the start of the variables holding its credentials and URL."""
        return "EMAG_" + self.name.upper().replace("-", "_")

    @property
    def legacy(self) -> bool:
        """``main`` or ``fbe`` of the kind of its name: configured by EMAG_API_URL as before."""
        return self.name == self.kind.value

    def __str__(self) -> str:
        return self.name


def legacy_account(kind: AccountType, platform: Platform = DEFAULT_PLATFORM) -> Account:
    """The account ``main`` or ``fbe`` of an install made before accounts were data."""
    return Account(name=kind.value, kind=kind, platform=platform)
