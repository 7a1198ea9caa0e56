"""Typed configuration, read once from the environment (and an optional .env file)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from emag_sync.errors import MissingCredentialsError

DEFAULT_API_URL = "https://marketplace-api.emag.ro/api-3"
# eMAG section 1.5: everything but orders is limited to 3 requests/s and 180/min per account, cumulative.
EMAG_REQUESTS_PER_SECOND = 3.0
EMAG_REQUESTS_PER_MINUTE = 180


class AccountType(StrEnum):
    """A seller's two eMAG accounts, each with its own credentials and catalogue."""

    MAIN = "main"
    FBE = "fbe"

    @property
    def label(self) -> str:
        return self.value.upper()


def parse_accounts(value: str) -> list[AccountType]:
    """``main``, ``fbe`` or ``both`` (also ``main,fbe``) to a list of accounts, MAIN first."""
    wanted = {part.strip().lower() for part in value.split(",") if part.strip()}
    if wanted == {"both"}:
        return [AccountType.MAIN, AccountType.FBE]
    unknown = wanted - {a.value for a in AccountType}
    if unknown or not wanted:
        raise ValueError(f"account must be main, fbe or both, got {value!r}")
    return [a for a in AccountType if a.value in wanted]


class AccountConfig(BaseModel):
    """Everything a client needs to talk to one account. The password never shows in repr or logs."""

    model_config = ConfigDict(frozen=True)

    account: AccountType
    username: str
    password: SecretStr
    api_url: str
    requests_per_second: float = EMAG_REQUESTS_PER_SECOND
    requests_per_minute: int = EMAG_REQUESTS_PER_MINUTE
    max_attempts: int = 6
    timeout_seconds: float = 60.0
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0


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
    emag_requests_per_second: float = Field(default=EMAG_REQUESTS_PER_SECOND, gt=0)
    emag_requests_per_minute: int = Field(default=EMAG_REQUESTS_PER_MINUTE, gt=0)
    emag_max_attempts: int = Field(default=6, ge=1)
    emag_timeout_seconds: float = Field(default=60.0, gt=0)
    emag_sync_home: Path = Path(".emag-sync")
    emag_sync_database_url: SecretStr | None = None

    @field_validator("emag_main_username", "emag_fbe_username", "emag_main_api_url", "emag_fbe_api_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("emag_main_password", "emag_fbe_password", "emag_sync_database_url")
    @classmethod
    def _blank_secret_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @property
    def home(self) -> Path:
        return self.emag_sync_home.expanduser().resolve()

    def api_url_for(self, account: AccountType) -> str:
        override = self.emag_main_api_url if account is AccountType.MAIN else self.emag_fbe_api_url
        return (override or self.emag_api_url).rstrip("/")

    def missing_credentials(self, account: AccountType) -> list[str]:
        """Names of the environment variables this account still needs (empty when complete)."""
        prefix = f"EMAG_{account.label}_"
        values = {
            f"{prefix}USERNAME": getattr(self, f"emag_{account.value}_username"),
            f"{prefix}PASSWORD": getattr(self, f"emag_{account.value}_password"),
        }
        return [name for name, value in values.items() if value is None]

    def account_config(
        self, account: AccountType, password: SecretStr | None = None, username: str | None = None
    ) -> AccountConfig:
        """The account's connection settings; raises before any request when credentials are missing.

        ``password`` and ``username`` let a caller supply them from Prefect Secret blocks instead of the
        environment.
        """
        username = username or getattr(self, f"emag_{account.value}_username")
        password = password or getattr(self, f"emag_{account.value}_password")
        supplied = {"USERNAME": username, "PASSWORD": password}
        missing = [name for name in self.missing_credentials(account) if not supplied[name.rsplit("_", 1)[1]]]
        if missing or username is None or password is None:
            raise MissingCredentialsError(
                f"{account.label} account: credentials missing, set {' and '.join(missing)} "
                "(environment, .env, or a Prefect Secret block; see README 'Configuration')"
            )
        return AccountConfig(
            account=account,
            username=username,
            password=password,
            api_url=self.api_url_for(account),
            requests_per_second=self.emag_requests_per_second,
            requests_per_minute=self.emag_requests_per_minute,
            max_attempts=self.emag_max_attempts,
            timeout_seconds=self.emag_timeout_seconds,
        )


def get_settings() -> Settings:
    """A fresh read of the environment (cheap; no caching so tests can change variables)."""
    return Settings()
