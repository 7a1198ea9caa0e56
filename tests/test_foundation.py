"""Settings, schema and database plumbing."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from emag_sync.accounts import AccountType, parse_accounts
from emag_sync.db import make_engine, normalise_url
from emag_sync.errors import ConfigError, DatabaseUnavailableError, MissingCredentialsError
from emag_sync.schema import SCHEMA
from emag_sync.settings import Settings


def test_missing_credentials_named_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAG_MAIN_USERNAME", "seller")
    settings = Settings(_env_file=None)
    with pytest.raises(MissingCredentialsError, match="main: credentials missing.*EMAG_MAIN_PASSWORD"):
        settings.account_config(AccountType.MAIN)
    with pytest.raises(MissingCredentialsError, match="EMAG_FBE_USERNAME and EMAG_FBE_PASSWORD"):
        settings.account_config(AccountType.FBE)


def test_password_is_secret_and_urls_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAG_FBE_USERNAME", "fbe-user")
    monkeypatch.setenv("EMAG_FBE_PASSWORD", "hunter2-fbe")
    monkeypatch.setenv("EMAG_API_URL", "https://marketplace-api.emag.bg/api-3/")
    monkeypatch.setenv("EMAG_MAIN_API_URL", "http://127.0.0.1:9/api-3")
    settings = Settings(_env_file=None)
    fbe = settings.account_config(AccountType.FBE)
    assert fbe.api_url == "https://marketplace-api.emag.bg/api-3"
    assert settings.api_url_for(AccountType.MAIN) == "http://127.0.0.1:9/api-3"
    assert "hunter2" not in repr(fbe) and "hunter2" not in str(settings)


def test_parse_accounts() -> None:
    assert parse_accounts("both") == [AccountType.MAIN, AccountType.FBE]
    assert parse_accounts("FBE") == [AccountType.FBE]
    with pytest.raises(ConfigError, match="main, fbe or both"):
        parse_accounts("shop")


def test_schema_tables_exist(engine) -> None:
    names = set(inspect(engine).get_table_names(schema=SCHEMA))
    assert {"emag_products_v2", "emag_product_offers_v2", "emag_sync_runs", "emag_sync_rejects"} <= names


def test_unreachable_database_names_the_setting_without_password() -> None:
    url = normalise_url("postgresql://alice:s3cret@127.0.0.1:1/nowhere")
    with pytest.raises(DatabaseUnavailableError, match="EMAG_SYNC_DATABASE_URL") as info:
        make_engine(url)
    assert "s3cret" not in str(info.value)


def test_requests_per_minute_follow_requests_per_second_unless_set(monkeypatch) -> None:
    """Raising EMAG_REQUESTS_PER_SECOND alone must not leave eMAG's 180/min in force."""
    assert Settings().emag_requests_per_minute == 180
    monkeypatch.setenv("EMAG_REQUESTS_PER_SECOND", "10")
    assert Settings().emag_requests_per_minute == 600
    monkeypatch.setenv("EMAG_REQUESTS_PER_MINUTE", "200")
    assert Settings().emag_requests_per_minute == 200
    monkeypatch.setenv("EMAG_REQUESTS_PER_SECOND", "0.5")
    monkeypatch.delenv("EMAG_REQUESTS_PER_MINUTE")
    assert Settings().emag_requests_per_minute == 30
