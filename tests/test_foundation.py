"""Settings, schema and database plumbing."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from emag_sync.accounts import Account, AccountType, legacy_account
from emag_sync.db import make_engine, normalise_url
from emag_sync.errors import DatabaseUnavailableError, MissingCredentialsError
from emag_sync.platforms import PLATFORMS
from emag_sync.schema import SCHEMA
from emag_sync.settings import Settings


def test_missing_credentials_named_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAG_MAIN_USERNAME", "seller")
    settings = Settings(_env_file=None)
    with pytest.raises(MissingCredentialsError, match="main: credentials missing.*EMAG_MAIN_PASSWORD"):
        settings.account_config(legacy_account(AccountType.MAIN))
    with pytest.raises(MissingCredentialsError, match="EMAG_FBE_USERNAME and EMAG_FBE_PASSWORD"):
        settings.account_config(legacy_account(AccountType.FBE))


def test_password_is_secret_and_urls_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAG_FBE_USERNAME", "fbe-user")
    monkeypatch.setenv("EMAG_FBE_PASSWORD", "hunter2-fbe")
    monkeypatch.setenv("EMAG_API_URL", "https://marketplace-api.emag.bg/api-3/")
    monkeypatch.setenv("EMAG_MAIN_API_URL", "http://127.0.0.1:9/api-3")
    settings = Settings(_env_file=None)
    fbe = settings.account_config(legacy_account(AccountType.FBE))
    assert fbe.api_url == "https://marketplace-api.emag.bg/api-3"
    assert settings.api_url_for(legacy_account(AccountType.MAIN)) == "http://127.0.0.1:9/api-3"
    assert "hunter2" not in repr(fbe) and "hunter2" not in str(settings)


def test_a_registered_accounts_credentials_and_url_are_found_by_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """EMAG_<NAME>_USERNAME / _PASSWORD (upper case, - as _) from the environment or .env; the URL from
    EMAG_<NAME>_API_URL, else the registry's override, else its platform's (EMAG_API_URL is main's and
    fbe's, as before)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("EMAG_ACME_BG_MAIN_PASSWORD=from-dotenv\n")
    monkeypatch.setenv("EMAG_ACME_BG_MAIN_USERNAME", "acme-bg")
    monkeypatch.setenv("EMAG_API_URL", "http://127.0.0.1:9/api-3")
    bg = Account("acme-bg-main", AccountType.MAIN, PLATFORMS["emag-bg"], seller="acme")
    settings = Settings()
    config = settings.account_config(bg)
    assert (config.username, config.password.get_secret_value()) == ("acme-bg", "from-dotenv")
    assert config.api_url == "https://marketplace-api.emag.bg/api-3"
    assert settings.credential_source(bg, "username") == "the environment"
    assert settings.credential_source(bg, "password") == ".env"
    with_override = Account(
        "acme-bg-main", AccountType.MAIN, PLATFORMS["emag-bg"], api_url="http://proxy/api-3"
    )
    assert settings.api_url_for(with_override) == "http://proxy/api-3"
    monkeypatch.setenv("EMAG_ACME_BG_MAIN_API_URL", "http://sandbox/emag-bg/api-3/")
    assert Settings().api_url_for(with_override) == "http://sandbox/emag-bg/api-3"
    assert Settings().api_url_for(legacy_account(AccountType.FBE)) == "http://127.0.0.1:9/api-3"
    hu = Account("hu-fbe", AccountType.FBE, PLATFORMS["emag-hu"])
    with pytest.raises(
        MissingCredentialsError,
        match="hu-fbe: credentials missing, set EMAG_HU_FBE_USERNAME and EMAG_HU_FBE_PASSWORD",
    ):
        settings.account_config(hu)


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
