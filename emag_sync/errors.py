"""The project's exceptions: each carries its account as a field and says what failed and what to do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from emag_sync.accounts import Account


class EmagSyncError(Exception):
    """Base of every error this project raises on purpose; the CLI shows these as one line.

    ``account`` is a field, formatted once as the message's prefix (``fbe: ...``), so nobody has to parse
    a message to learn which account failed.
    """

    def __init__(self, message: str, *, account: Account | None = None) -> None:
        super().__init__(message)
        self.detail = message
        self.account = account

    def __str__(self) -> str:
        return f"{self.account.title}: {self.detail}" if self.account is not None else self.detail


class ConfigError(EmagSyncError):
    """A setting is missing or wrong; the message names the environment variable."""


class MissingCredentialsError(ConfigError):
    """An account was asked for but its username or password is not configured."""


class DatabaseUnavailableError(ConfigError):
    """The database named by EMAG_SYNC_DATABASE_URL (or the embedded one) cannot be reached."""


class StatementTimeoutError(EmagSyncError):
    """PostgreSQL cancelled a statement (SQLSTATE 57014): it ran past ``statement_timeout``, or was cancelled."""


class DatabasePermissionError(EmagSyncError):
    """The database role may not do what was asked to a table (SQLSTATE 42501); ``role`` and ``relation``
    name them."""

    def __init__(self, message: str, *, role: str, relation: str, account: Account | None = None) -> None:
        super().__init__(message, account=account)
        self.role = role
        self.relation = relation


class SchemaVersionError(ConfigError):
    """The database schema is not at the revision this code needs and cannot (or may not) be brought there."""


class EmagApiError(EmagSyncError):
    """A call to the eMAG Marketplace API failed; carries the account, resource and page."""

    def __init__(
        self,
        message: str,
        *,
        account: Account,
        resource: str,
        page: int | None = None,
        status_code: int | None = None,
        messages: Sequence[object] = (),
    ) -> None:
        self.resource = resource
        self.page = page
        self.status_code = status_code
        self.messages = list(messages)
        where = resource + (f" page {page}" if page is not None else "")
        detail = f" (eMAG says: {'; '.join(str(m) for m in self.messages)})" if self.messages else ""
        super().__init__(f"{where}: {message}{detail}", account=account)


class EmagAuthError(EmagApiError):
    """401/403: wrong credentials or a non-whitelisted IP. Fatal, never retried."""


class EmagRequestError(EmagApiError):
    """Another 4xx: the request itself is wrong. Fatal, never retried."""


class EmagBusinessError(EmagApiError):
    """HTTP 200 with ``isError: true``: eMAG refused the request. Fatal, never retried."""


class EmagResponseFormatError(EmagApiError):
    """The body is not JSON or not eMAG's envelope."""


class EmagUnavailableError(EmagApiError):
    """429/5xx/timeouts/connection errors that outlasted every retry."""


class EmagUncertainWriteError(EmagApiError):
    """A write whose outcome is unknown (sent, then the connection failed): re-read before trusting it."""


class EmagFilterIgnoredError(EmagApiError):
    """A filtered read answered records the filter does not match (eMAG ignored it): nothing is taken from it."""


class EmagPagingError(EmagApiError):
    """A read did not end where ``count`` said (full pages past its pages plus one): nothing is lost, rerun."""


class IncompleteReadError(EmagSyncError):
    """A read ended with fewer records than eMAG counted: nothing is deactivated, a new run reads again."""


class DeactivationLimitError(EmagSyncError):
    """More of the account's active offers went missing than one run may deactivate: nothing is deactivated."""


class SyncInterruptedError(EmagSyncError):
    """The operator stopped the sync (Ctrl-C, SIGTERM) at a batch boundary: the run is interrupted, resumable.

    ``signal_number`` is the signal that asked for it (the command exits 128 + it).
    """

    def __init__(self, message: str, *, account: Account | None = None, signal_number: int) -> None:
        super().__init__(message, account=account)
        self.signal_number = signal_number


class SyncLockedError(EmagSyncError):
    """Another sync of the same account holds the lock."""


class BudgetBusyError(EmagSyncError):
    """Another process held the account's eMAG budget (its login's lease) for longer than a process waits."""


class ResumeError(EmagSyncError):
    """A resume was asked for but nothing can be resumed."""


class RunStateError(EmagSyncError):
    """A sync run row is missing, belongs to another account, or is not running (e.g. load into a finished run)."""


class PriceFix(StrEnum):
    """What the operator can do about a refused price. The rules name it; each caller words it in the terms
    of its own interface (``--min-price`` on the command line, ``min_price`` in the Prefect form)."""

    GIVE_MIN_PRICE = "give-min-price"
    GIVE_MAX_PRICE = "give-max-price"
    CHANGE_PRICE_OR_RANGE = "change-price-or-range"
    ALLOW_LARGE_CHANGE = "allow-large-change"


# The fixes in the names of the request's own fields, which are also the price flows' parameters.
PARAMETER_FIXES: Mapping[PriceFix, str] = {
    PriceFix.GIVE_MIN_PRICE: "give one in min_price",
    PriceFix.GIVE_MAX_PRICE: "give one in max_price",
    PriceFix.CHANGE_PRICE_OR_RANGE: "change the price or give min_price/max_price",
    PriceFix.ALLOW_LARGE_CHANGE: "set allow_large_change to true if the change is intended",
}


class PriceUpdateError(EmagSyncError):
    """A price update was refused before or by eMAG.

    ``subject`` (``EMG469 on eMAG FBE``) and ``fix`` (what the operator can do) are fields: a table row
    shows the subject in its own columns, and each caller words the fix in its own terms (``worded``).
    ``str()`` words it in the request's field names, which the price flows' parameters share.
    """

    def __init__(
        self,
        message: str,
        *,
        account: Account | None = None,
        subject: str | None = None,
        fix: PriceFix | None = None,
    ) -> None:
        super().__init__(message, account=account)
        self.subject = subject
        self.fix = fix

    def worded(self, fixes: Mapping[PriceFix, str]) -> str:
        """The whole message with its fix in ``fixes``' terms."""
        text = f"{self.subject}: {self.detail}" if self.subject else self.detail
        if self.account is not None:
            text = f"{self.account.title}: {text}"
        return with_fix(text, self.fix, fixes)

    def __str__(self) -> str:
        return self.worded(PARAMETER_FIXES)


def with_fix(message: str, fix: PriceFix | None, fixes: Mapping[PriceFix, str]) -> str:
    """``message; <the fix in the caller's terms>`` (the message alone when there is no fix)."""
    return f"{message}; {fixes[fix]}" if fix is not None else message


class StockUpdateError(PriceUpdateError):
    """A stock update was refused before or by eMAG (its fields and wording as a price update's: the two
    are offer updates sent and audited by one machinery)."""


class MassZeroStockError(StockUpdateError):
    """A bulk would set more than EMAG_MAX_ZERO_STOCK_SHARE of an account's active offers to stock 0."""


class OfferNotPublishedError(PriceUpdateError):
    """The offer is not in the database, inactive, or has no eMAG id."""
