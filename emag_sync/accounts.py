"""A seller's two eMAG accounts, MAIN and FBE, and how operators name them."""

from __future__ import annotations

from enum import StrEnum


class AccountType(StrEnum):
    """A seller's two eMAG accounts, each with its own credentials and catalogue."""

    MAIN = "main"
    FBE = "fbe"

    @property
    def label(self) -> str:
        return self.value.upper()


def parse_accounts(value: str) -> list[AccountType]:
    """``main``, ``fbe`` or ``both`` (also ``main,fbe``) to a list of accounts, MAIN first."""
    from emag_sync.errors import ConfigError  # errors imports this module for AccountType

    wanted = {part.strip().lower() for part in value.split(",") if part.strip()}
    if wanted == {"both"}:
        return [AccountType.MAIN, AccountType.FBE]
    unknown = wanted - {a.value for a in AccountType}
    if unknown or not wanted:
        raise ConfigError(f"account must be main, fbe or both, got {value!r}")
    return [a for a in AccountType if a.value in wanted]
