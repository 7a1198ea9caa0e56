"""Typed configuration, read once from the environment (and an optional .env file)."""

from __future__ import annotations

import os
import sys
from decimal import Decimal
from pathlib import Path

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from emag_sync.accounts import Account
from emag_sync.errors import ConfigError, MissingCredentialsError
from emag_sync.limits import DEFAULT_API_URL, REQUESTS_PER_MINUTE, REQUESTS_PER_SECOND, SECONDS_PER_MINUTE

# Where `emag-sync docs` serves the Data Docs site, and so the default base of the links to it.
DATA_DOCS_PORT = 8766
DEFAULT_DATA_DOCS_URL = f"http://127.0.0.1:{DATA_DOCS_PORT}/"
# A price update may move a sale price by at most this share of it unless the operator says it is intended
# (--allow-large-change / allow_large_change): 35.00 typed for 350.00 is refused, not applied.
DEFAULT_MAX_PRICE_CHANGE = Decimal("0.30")
# A bulk stock update may set at most this share of an account's active offers to 0 at once unless the
# operator says it is intended (--allow-mass-zero / allow_mass_zero): a broken ERP export must not empty
# the shop.
DEFAULT_MAX_ZERO_STOCK_SHARE = Decimal("0.20")
# A sync may always deactivate this many offers confirmed gone, whatever share of the catalogue they are: a
# shop of 5 offers that removes one (20%, above the default 10% share) is not refused on every scheduled run.
DEFAULT_MAX_DEACTIVATED_COUNT = 2
# Accounts one process syncs at once (a sync flow run's, in-process or a child of sync-all): each holds a
# thread, its client's look-ahead reads and a database connection while it loads; more wait their turn.
DEFAULT_MAX_CONCURRENT_ACCOUNTS = 20


class AccountConfig(BaseModel):
    """Everything a client needs to talk to one account. The password never shows in repr or logs."""

    model_config = ConfigDict(frozen=True)

    account: Account
    username: str
    password: SecretStr
    api_url: str
    requests_per_second: float = REQUESTS_PER_SECOND
    requests_per_minute: int = REQUESTS_PER_MINUTE
    max_attempts: int = 6
    timeout_seconds: float = 60.0
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0


def credential_variable(account: Account, field: str) -> str:
    """``EMAG_FBE_PASSWORD``, ``EMAG_ACME_BG_MAIN_USERNAME``: the variable holding one credential of an
    account (its name upper-cased, ``-`` as ``_``)."""
    return f"{account.env_prefix}_{field.upper()}"


def _dotenv() -> dict[str, str | None]:
    """The .env file of the working directory, as pydantic-settings reads it for the declared settings."""
    path = Path(".env")
    return dotenv_values(path) if path.is_file() else {}


class Settings(BaseSettings):
    """The environment, declared once. Names match the variables (EMAG_MAIN_USERNAME, ...)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    emag_main_username: str | None = None
    emag_main_password: SecretStr | None = None
    emag_fbe_username: str | None = None
    emag_fbe_password: SecretStr | None = None
    emag_api_url: str = DEFAULT_API_URL
    emag_main_api_url: str | None = None
    emag_fbe_api_url: str | None = None
    # Every number must be finite: inf would pass gt=0 and overflow later (60 x inf per minute).
    emag_requests_per_second: float = Field(default=REQUESTS_PER_SECOND, gt=0, allow_inf_nan=False)
    emag_requests_per_minute: int = Field(default=REQUESTS_PER_MINUTE, gt=0)
    emag_max_attempts: int = Field(default=6, ge=1)
    emag_timeout_seconds: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    emag_sync_home: Path = Path(".emag-sync")
    emag_sync_database_url: SecretStr | None = None
    # Every command brings an outdated schema to head on start; false (a DBA reviews migrations first)
    # stops it instead, naming `emag-sync db upgrade`.
    emag_sync_auto_migrate: bool = True
    # Data Docs: the site folder (default: GX's own under EMAG_SYNC_HOME) and the URL it is read at.
    emag_sync_data_docs_dir: Path | None = None
    emag_sync_data_docs_url: str = DEFAULT_DATA_DOCS_URL
    emag_max_price_change: Decimal = Field(default=DEFAULT_MAX_PRICE_CHANGE, gt=0, allow_inf_nan=False)
    emag_max_zero_stock_share: Decimal = Field(
        default=DEFAULT_MAX_ZERO_STOCK_SHARE, ge=0, le=1, allow_inf_nan=False
    )
    # The sync option max_deactivated_count when a run does not give one.
    emag_max_deactivated_count: int = Field(default=DEFAULT_MAX_DEACTIVATED_COUNT, ge=0)
    # How many accounts one process syncs at once (EMAG_SYNC_MAX_CONCURRENT_ACCOUNTS).
    emag_sync_max_concurrent_accounts: int = Field(default=DEFAULT_MAX_CONCURRENT_ACCOUNTS, ge=1, le=1000)

    @model_validator(mode="after")
    def _per_minute_follows_per_second(self) -> Settings:
        """EMAG_REQUESTS_PER_MINUTE is 60 x EMAG_REQUESTS_PER_SECOND unless set: raising the per-second
        budget alone must not leave eMAG's 180/min in force (a 14 s run took 68 s that way)."""
        if "emag_requests_per_minute" not in self.model_fields_set:
            per_minute = min(self.emag_requests_per_second * SECONDS_PER_MINUTE, sys.maxsize)  # 1e308/s
            self.emag_requests_per_minute = max(1, int(per_minute))
        return self

    @field_validator("emag_main_username", "emag_fbe_username", "emag_main_api_url", "emag_fbe_api_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("emag_sync_data_docs_dir", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("emag_sync_data_docs_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        """A base URL links are joined to: blank means the default, and it always ends with a slash."""
        value = value.strip() or DEFAULT_DATA_DOCS_URL
        return value if value.endswith("/") else value + "/"

    @field_validator("emag_main_password", "emag_fbe_password", "emag_sync_database_url")
    @classmethod
    def _blank_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @property
    def home(self) -> Path:
        return self.emag_sync_home.expanduser().resolve()

    @property
    def data_docs_dir(self) -> Path | None:
        """EMAG_SYNC_DATA_DOCS_DIR when set (None: the checkpoint's default site under the home)."""
        return self.emag_sync_data_docs_dir.expanduser().resolve() if self.emag_sync_data_docs_dir else None

    def api_url_for(self, account: Account) -> str:
        """Where the account's API is: ``EMAG_<NAME>_API_URL``, else the registry's override, else (for
        ``main`` / ``fbe``, as before) ``EMAG_API_URL``, else its platform's URL."""
        url = self.api_url_override(account) or account.api_url
        if url is None:
            url = self.emag_api_url if account.legacy else account.platform.api_url
        return url.rstrip("/")

    def api_url_override(self, account: Account) -> str | None:
        """``EMAG_<NAME>_API_URL`` when set."""
        if account.legacy:
            value: str | None = getattr(self, f"emag_{account.name}_api_url")
            return value
        return self._variable(f"{account.env_prefix}_API_URL")

    def api_url_setting(self, account: Account) -> str:
        """What decides the account's API URL, for error messages."""
        if self.api_url_override(account):
            return f"{account.env_prefix}_API_URL"
        if account.api_url:
            return f"the api_url of account {account.name} (emag-sync accounts list)"
        return "EMAG_API_URL" if account.legacy else f"{account.env_prefix}_API_URL"

    def credential(self, account: Account, field: str) -> str | SecretStr | None:
        """The username or password of an account as the environment (or .env) has it (None when unset)."""
        if account.legacy:
            value: str | SecretStr | None = getattr(self, f"emag_{account.name}_{field}")
            return value
        text = self._variable(credential_variable(account, field))
        if text is None:
            return None
        return SecretStr(text) if field == "password" else text

    def credential_source(self, account: Account, field: str) -> str | None:
        """``the environment`` or ``.env`` for a credential that is set there, None otherwise."""
        variable = credential_variable(account, field)
        if (os.environ.get(variable) or "").strip():
            return "the environment"
        return ".env" if (_dotenv().get(variable) or "").strip() else None

    @staticmethod
    def _variable(name: str) -> str | None:
        value = os.environ.get(name)
        if value is None:
            value = _dotenv().get(name)
        return value.strip() or None if value is not None else None

    def rate_for(self, account: Account) -> tuple[float, int]:
        """The account's requests per second and per minute: EMAG_REQUESTS_PER_SECOND (and _PER_MINUTE)
        when set in the environment, for every account as before; else the registry's rate."""
        if "emag_requests_per_second" in self.model_fields_set:
            return self.emag_requests_per_second, self.emag_requests_per_minute
        per_second = float(account.requests_per_second)
        per_minute = (
            self.emag_requests_per_minute
            if "emag_requests_per_minute" in self.model_fields_set
            else max(1, int(per_second * SECONDS_PER_MINUTE))
        )
        return per_second, per_minute

    def account_config(
        self, account: Account, password: SecretStr | None = None, username: str | None = None
    ) -> AccountConfig:
        """The account's connection settings; raises before any request when credentials are missing.

        ``password`` and ``username`` let a caller supply them from Prefect Secret blocks instead of the
        environment.
        """
        env_username = self.credential(account, "username")
        username = username or (env_username if isinstance(env_username, str) else None)
        env_password = self.credential(account, "password")
        password = password or (env_password if isinstance(env_password, SecretStr) else None)
        missing = [
            credential_variable(account, field)
            for field, value in (("username", username), ("password", password))
            if value is None
        ]
        if username is None or password is None:
            raise MissingCredentialsError(
                f"credentials missing, set {' and '.join(missing)} "
                "(environment, .env, or a Prefect Secret block; see README 'Configuration')",
                account=account,
            )
        per_second, per_minute = self.rate_for(account)
        return AccountConfig(
            account=account,
            username=username,
            password=password,
            api_url=self.api_url_for(account),
            requests_per_second=per_second,
            requests_per_minute=per_minute,
            max_attempts=self.emag_max_attempts,
            timeout_seconds=self.emag_timeout_seconds,
        )


def get_settings() -> Settings:
    """A fresh read of the environment (cheap; no caching so tests can change variables).

    A value a setting cannot take raises ConfigError: one line per bad variable, naming it, its value
    (never a secret's) and what it takes.
    """
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError("; ".join(_setting_problem(error) for error in exc.errors())) from None


def _setting_problem(error: ErrorDetails) -> str:
    """``EMAG_TIMEOUT_SECONDS='0' is refused: input should be greater than 0``."""
    name = str(error["loc"][0]) if error["loc"] else ""
    field = Settings.model_fields.get(name)
    if field is None:
        return f"settings: {error['msg']}"
    secret = "SecretStr" in str(field.annotation)
    value = "(hidden)" if secret else repr(error["input"])
    reason = error["msg"][0].lower() + error["msg"][1:]
    return f"{name.upper()}={value} is refused: {reason}"
