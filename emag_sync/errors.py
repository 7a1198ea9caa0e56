"""The project's exceptions: each carries its account as a field and says what failed and what to do."""

from __future__ import annotations

from collections.abc import Sequence

from emag_sync.accounts import AccountType


class EmagSyncError(Exception):
    """Base of every error this project raises on purpose; the CLI shows these as one line.

    ``account`` is a field, formatted once as the message's prefix (``fbe: ...``), so nobody has to parse
    a message to learn which account failed.
    """

    def __init__(self, message: str, *, account: AccountType | None = None) -> None:
        super().__init__(message)
        self.detail = message
        self.account = account

    def __str__(self) -> str:
        return f"{self.account.value}: {self.detail}" if self.account is not None else self.detail


class ConfigError(EmagSyncError):
    """A setting is missing or wrong; the message names the environment variable."""


class MissingCredentialsError(ConfigError):
    """An account was asked for but its username or password is not configured."""


class DatabaseUnavailableError(ConfigError):
    """The database named by EMAG_SYNC_DATABASE_URL (or the embedded one) cannot be reached."""


class EmagApiError(EmagSyncError):
    """A call to the eMAG Marketplace API failed; carries the account, resource and page."""

    def __init__(
        self,
        message: str,
        *,
        account: AccountType,
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


class EmagPagingError(EmagApiError):
    """A read did not end where ``count`` said (full pages past its pages plus one): nothing is lost, rerun."""


class IncompleteReadError(EmagSyncError):
    """A read ended with fewer records than eMAG counted: nothing is deactivated, a new run reads again."""


class DeactivationLimitError(EmagSyncError):
    """More of the account's active offers went missing than one run may deactivate: nothing is deactivated."""


class SyncLockedError(EmagSyncError):
    """Another sync of the same account holds the lock."""


class ResumeError(EmagSyncError):
    """A resume was asked for but nothing can be resumed."""


class RunStateError(EmagSyncError):
    """A sync run row is missing, belongs to another account, or is not running (e.g. load into a finished run)."""


class DataQualityError(EmagSyncError):
    """A critical data-quality expectation failed; the message lists each failure with observed values."""


class PriceUpdateError(EmagSyncError):
    """A price update was refused before or by eMAG."""


class OfferNotPublishedError(PriceUpdateError):
    """The offer is not in the database, inactive, or has no eMAG id."""
