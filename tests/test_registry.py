"""The account registry: names, platforms, selection, legacy registration and removal that loses nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from emag_sync.accounts import AccountType
from emag_sync.errors import ConfigError
from emag_sync.registry import (
    add_account,
    get_account,
    list_accounts,
    register_legacy,
    remove_account,
    select_accounts,
    set_enabled,
)


def test_an_account_is_a_row_with_a_platform_and_a_kind(engine: Engine) -> None:
    added = add_account(
        engine, "Acme-BG-Main", platform="emag-bg", kind="main", seller=" Acme SRL ", requests_per_second=2.5
    )
    assert (added.name, added.kind, added.platform.code, added.seller) == ("acme-bg-main", AccountType.MAIN,
                                                                           "emag-bg", "Acme SRL")  # fmt: skip
    assert (
        added.requests_per_second == Decimal("2.5")
        and added.enabled
        and added.label == "acme-bg-main (Acme SRL)"
    )
    assert get_account(engine, "ACME-bg-main") == added
    assert [a.name for a in list_accounts(engine)] == ["acme-bg-main", "fbe", "main"]


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("all", {}, "account name 'all' is reserved"),
        ("both", {}, "account name 'both' is reserved"),
        ("ro fbe", {}, "account name 'ro fbe' is not a slug"),
        ("-ro", {}, "is not a slug"),
        ("x" * 41, {}, "is not a slug"),
        (
            "pl-main",
            {"platform": "emag-pl"},
            "account pl-main: platform must be one of emag-ro, emag-bg, emag-hu",
        ),
        ("ro-x", {"kind": "easybox"}, "account ro-x: kind must be main or fbe, got 'easybox'"),
        ("ro-slow", {"requests_per_second": 0}, "requests per second must be above 0"),
        ("ro-url", {"api_url": "ftp://x"}, "--api-url must be an http(s) URL"),
        ("main", {}, "account main is already registered (main on emag-ro)"),
    ],
)
def test_bad_accounts_are_refused_by_field(engine: Engine, name: str, options: dict, message: str) -> None:
    arguments = {"platform": "emag-ro", "kind": "main", **options}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        add_account(engine, name, **arguments)
    assert [a.name for a in list_accounts(engine)] == ["fbe", "main"]


def test_selection_by_name_all_both_and_seller(engine: Engine) -> None:
    add_account(engine, "bg-main", platform="emag-bg", kind="main", seller="acme")
    add_account(engine, "hu-fbe", platform="emag-hu", kind="fbe", seller="acme")
    add_account(engine, "other-ro", platform="emag-ro", kind="main", seller="other")
    set_enabled(engine, "other-ro", False)
    names = lambda accounts: [a.name for a in accounts]  # noqa: E731
    assert names(select_accounts(engine, "hu-fbe,bg-main")) == ["hu-fbe", "bg-main"]
    assert names(select_accounts(engine, "both")) == ["main", "fbe"]
    assert names(select_accounts(engine, "all")) == ["bg-main", "fbe", "hu-fbe", "main"]  # disabled skipped
    assert names(select_accounts(engine, "all", seller="acme")) == ["bg-main", "hu-fbe"]
    with pytest.raises(
        ConfigError, match="no account 'nope'; registered: bg-main, fbe, hu-fbe, main, other-ro"
    ):
        select_accounts(engine, "bg-main,nope")
    with pytest.raises(ConfigError, match="account other-ro is disabled"):
        select_accounts(engine, "other-ro")


def test_legacy_accounts_are_registered_on_the_platform_of_emag_api_url(empty_registry: Engine) -> None:
    register_legacy(empty_registry, [AccountType.FBE], "https://marketplace-api.emag.hu/api-3")
    register_legacy(empty_registry, AccountType, "http://127.0.0.1:8765/api-3")  # a sandbox: eMAG Romania
    found = {a.name: (a.kind, a.platform.code) for a in list_accounts(empty_registry)}
    assert found == {"fbe": (AccountType.FBE, "emag-hu"), "main": (AccountType.MAIN, "emag-ro")}
    assert all(a.legacy for a in list_accounts(empty_registry))


@pytest.fixture
def empty_registry(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM app.emag_accounts"))
    return engine


def test_removal_loses_nothing(engine: Engine) -> None:
    """An account with rows is removed only with keep_data, which keeps every row (made inactive) and the
    name; an empty one goes; the name comes back with its rows for the same platform and kind only."""
    add_account(engine, "ro-two", platform="emag-ro", kind="main")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO app.emag_products_v2 (sku, account_type, account, emag_id, raw_emag_data, content_hash,"
            " last_synced_at)"
            " VALUES ('EMG1', 'main', 'ro-two', 1, '{}', 'h', now())"
        ))  # fmt: skip
    with pytest.raises(ConfigError, match="account ro-two has 1 products, 0 offers.*nothing was removed"):
        remove_account(engine, "ro-two", keep_data=False)
    remove_account(engine, "ro-two", keep_data=True)
    assert get_account(engine, "ro-two").removed_at is not None
    assert "ro-two" not in [a.name for a in list_accounts(engine)]
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT is_active FROM app.emag_products_v2 WHERE account = 'ro-two'")
        ).all() == [(False,)]
    with pytest.raises(ConfigError, match="was removed with its rows kept \\(main on emag-ro\\)"):
        add_account(engine, "ro-two", platform="emag-bg", kind="main")
    assert add_account(engine, "ro-two", platform="emag-ro", kind="main").removed_at is None

    add_account(engine, "ro-empty", platform="emag-ro", kind="fbe")
    remove_account(engine, "ro-empty", keep_data=False)
    assert get_account(engine, "ro-empty") is None


def test_a_failed_first_use_leaves_no_account_behind(empty_registry: Engine, monkeypatch) -> None:
    """`--account both` on an install without credentials is refused as before, naming the variables, and
    registers nothing; once EMAG_MAIN_* is set, `main` is registered on first use."""
    from emag_sync.errors import MissingCredentialsError
    from emag_sync.registry import resolve_accounts
    from emag_sync.settings import Settings

    for name in ("EMAG_MAIN_USERNAME", "EMAG_MAIN_PASSWORD", "EMAG_FBE_USERNAME", "EMAG_FBE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="main: credentials missing.*; fbe: credentials missing"):
        resolve_accounts(empty_registry, "both", settings=Settings(_env_file=None))
    assert list_accounts(empty_registry, include_removed=True) == []
    monkeypatch.setenv("EMAG_MAIN_USERNAME", "seller")
    monkeypatch.setenv("EMAG_MAIN_PASSWORD", "secret")
    [main] = resolve_accounts(empty_registry, "main", settings=Settings(_env_file=None))
    assert main.name == "main" and main.legacy
    with pytest.raises(MissingCredentialsError, match="fbe: credentials missing"):
        resolve_accounts(empty_registry, "fbe", settings=Settings(_env_file=None))
    assert [a.name for a in list_accounts(empty_registry)] == ["main"]


def test_disabled_and_removed_accounts_say_so(engine: Engine) -> None:
    from emag_sync.errors import PriceUpdateError
    from emag_sync.prices.rules import make_request
    from emag_sync.registry import accounts_by_name

    add_account(engine, "bg-main", platform="emag-bg", kind="main")
    set_enabled(engine, "bg-main", False)
    with pytest.raises(
        PriceUpdateError, match=r"account bg-main is disabled \(`emag-sync accounts enable bg-main`\)"
    ):
        make_request("EMG1", "bg-main", "10", accounts=accounts_by_name(engine))
    add_account(engine, "hu-fbe", platform="emag-hu", kind="fbe")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO app.emag_products_v2 (sku, account_type, account, emag_id, raw_emag_data, content_hash,"
            " last_synced_at) VALUES ('EMG1', 'fbe', 'hu-fbe', 1, '{}', 'h', now())"
        ))  # fmt: skip
    remove_account(engine, "hu-fbe", keep_data=True)
    with pytest.raises(ConfigError, match="account hu-fbe was removed with its rows kept; add it back with"):
        set_enabled(engine, "hu-fbe", True)
