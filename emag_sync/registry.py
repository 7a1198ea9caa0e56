"""The account registry (``app.emag_accounts``): an account is a row, found by its name.

A name is a slug (``ro-fbe``, ``acme-bg-main``); its credentials are found by it, never stored here
(``emag_sync.api.credentials``). The two accounts of earlier versions, ``main`` and ``fbe``, are registered
on first use when their credentials are configured, on the platform ``EMAG_API_URL`` names, so an existing
install keeps working unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import ColumnElement, Connection, Engine, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert

from emag_sync.accounts import Account, AccountType, legacy_account
from emag_sync.errors import ConfigError, MissingCredentialsError
from emag_sync.platforms import DEFAULT_PLATFORM, platform_named, platform_of_url
from emag_sync.schema import ACCOUNT_NAME_PATTERN, accounts, offers, price_updates, products, sync_runs
from emag_sync.settings import Settings

# Words a selection uses, so no account may be called that.
RESERVED_NAMES = frozenset({"all", "both"})
LEGACY_NAMES = {kind.value: kind for kind in AccountType}


def check_name(name: str) -> str:
    """The name as stored (lower case), or ConfigError saying what a name may be."""
    cleaned = name.strip().lower()
    if cleaned in RESERVED_NAMES:
        raise ConfigError(f"account name {name!r} is reserved (it selects several accounts); choose another")
    if not re.fullmatch(ACCOUNT_NAME_PATTERN, cleaned):
        raise ConfigError(
            f"account name {name!r} is not a slug: 1-40 characters of a-z, 0-9 and '-', starting and ending "
            "with a letter or digit (e.g. ro-fbe, acme-bg-main)"
        )
    return cleaned


def _from_row(row: object) -> Account:
    m = row._mapping  # type: ignore[attr-defined]
    return Account(
        name=m["name"],
        kind=AccountType(m["kind"]),
        platform=platform_named(m["platform"]),
        seller=m["seller"],
        api_url=m["api_url"],
        requests_per_second=m["requests_per_second"],
        enabled=m["enabled"],
        removed_at=m["removed_at"],
        created_at=m["created_at"],
    )


def list_accounts(engine: Engine | Connection, *, include_removed: bool = False) -> list[Account]:
    """Every registered account, by name (removed ones only when asked)."""
    query = select(accounts).order_by(accounts.c.name)
    if not include_removed:
        query = query.where(accounts.c.removed_at.is_(None))
    return [_from_row(row) for row in _rows(engine, query)]


def accounts_by_name(engine: Engine | Connection) -> dict[str, Account]:
    """The registered accounts by name (disabled ones too, so input naming one is told it is disabled)."""
    return {account.name: account for account in list_accounts(engine)}


def get_account(engine: Engine | Connection, name: str) -> Account | None:
    rows = _rows(engine, select(accounts).where(accounts.c.name == name.strip().lower()))
    return _from_row(rows[0]) if rows else None


def _rows(engine: Engine | Connection, query: object) -> list[object]:
    if isinstance(engine, Connection):
        return list(engine.execute(query))  # type: ignore[call-overload]
    with engine.connect() as conn:
        return list(conn.execute(query))  # type: ignore[call-overload]


def add_account(
    engine: Engine,
    name: str,
    *,
    platform: str,
    kind: str,
    seller: str | None = None,
    api_url: str | None = None,
    requests_per_second: Decimal | float | None = None,
) -> Account:
    """Register an account; ConfigError (one line, naming the field) for a bad value or a taken name.

    A name removed with ``--keep-data`` comes back with its rows only for the same platform and kind.
    """
    name = check_name(name)
    try:
        chosen = platform_named(platform)
    except ValueError as exc:
        raise ConfigError(f"account {name}: {exc}") from None
    if kind.strip().lower() not in LEGACY_NAMES:
        raise ConfigError(f"account {name}: kind must be main or fbe, got {kind!r}")
    values: dict[str, object] = {
        "name": name,
        "kind": kind.strip().lower(),
        "platform": chosen.code,
        "seller": (seller or "").strip() or None,
        "api_url": _checked_url(name, api_url),
    }
    if requests_per_second is not None:
        rate = Decimal(str(requests_per_second))
        if not rate.is_finite() or rate <= 0 or rate > 1000:
            raise ConfigError(
                f"account {name}: requests per second must be above 0 and at most 1000, got {rate}"
            )
        values["requests_per_second"] = rate
    with engine.begin() as conn:
        existing = get_account(conn, name)
        if existing is not None and existing.removed_at is None:
            raise ConfigError(
                f"account {name} is already registered ({existing.kind.value} on {existing.platform.code}); "
                "`emag-sync accounts list` shows it"
            )
        if existing is not None:
            if (existing.kind.value, existing.platform.code) != (values["kind"], values["platform"]):
                raise ConfigError(
                    f"account {name} was removed with its rows kept ({existing.kind.value} on "
                    f"{existing.platform.code}); add it back with that kind and platform, or choose another name"
                )
            conn.execute(
                update(accounts)
                .where(accounts.c.name == name)
                .values(**values, removed_at=None, enabled=True, updated_at=func.now())
            )
        else:
            conn.execute(insert(accounts).values(**values))
        found = get_account(conn, name)
    assert found is not None
    return found


def _checked_url(name: str, url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(f"account {name}: --api-url must be an http(s) URL, got {url!r}")
    return url


def set_enabled(engine: Engine, name: str, enabled: bool) -> Account:
    with engine.begin() as conn:
        changed = conn.execute(
            update(accounts)
            .where(accounts.c.name == name.strip().lower(), accounts.c.removed_at.is_(None))
            .values(enabled=enabled, updated_at=func.now())
            .returning(accounts.c.name)
        ).scalar()
    if changed is None:
        removed = get_account(engine, name)
        if removed is not None:
            raise ConfigError(
                f"account {removed.name} was removed with its rows kept; add it back with `emag-sync accounts add "
                f"{removed.name} --platform {removed.platform.code} --kind {removed.kind.value}`"
            )
        raise unknown_account(engine, name)
    found = get_account(engine, name)
    assert found is not None
    return found


@dataclass(frozen=True)
class Holdings:
    """What an account owns in the database."""

    products: int
    offers: int
    active_offers: int
    runs: int
    price_updates: int

    @property
    def empty(self) -> bool:
        return not (self.products or self.offers or self.runs or self.price_updates)


def holdings(conn: Engine | Connection, name: str) -> Holdings:
    def count(table: Table, *where: ColumnElement[bool]) -> int:
        query = select(func.count()).select_from(table).where(table.c.account == name, *where)
        rows = _rows(conn, query)
        return int(rows[0][0])  # type: ignore[index]

    return Holdings(
        count(products),
        count(offers),
        count(offers, offers.c.is_active),
        count(sync_runs),
        count(price_updates),
    )


def remove_account(engine: Engine, name: str, *, keep_data: bool) -> Holdings:
    """Remove an account from the registry. Refused while it has rows unless ``keep_data``, which keeps
    them (products and offers made inactive) and the registry row (marked removed), so nothing is lost and
    the name cannot be taken by another account. Nothing is ever deleted silently."""
    account = get_account(engine, name)
    if account is None or account.removed_at is not None:
        raise unknown_account(engine, name)
    with engine.begin() as conn:
        held = holdings(conn, account.name)
        if held.empty:
            conn.execute(accounts.delete().where(accounts.c.name == account.name))
            return held
        if not keep_data:
            raise ConfigError(
                f"account {account.name} has {held.products} products, {held.offers} offers, {held.runs} sync runs "
                f"and {held.price_updates} price updates; nothing was removed. `--keep-data` removes the account "
                "and keeps its rows (inactive)"
            )
        for table in (products, offers):
            conn.execute(
                update(table)
                .where(table.c.account == account.name, table.c.is_active)
                .values(is_active=False, updated_at=func.now())
            )
        conn.execute(
            update(accounts)
            .where(accounts.c.name == account.name)
            .values(removed_at=func.now(), enabled=False, updated_at=func.now())
        )
    return held


def unknown_account(engine: Engine | Connection, name: str) -> ConfigError:
    """One line naming the registered accounts."""
    names = [account.name for account in list_accounts(engine)]
    known = ", ".join(names) if names else "none yet (`emag-sync accounts add`)"
    return ConfigError(f"no account {name!r}; registered: {known}")


def register_legacy(engine: Engine, kinds: Iterable[AccountType], api_url: str) -> list[Account]:
    """Register ``main`` / ``fbe`` (an install of before accounts as data) if they are not yet, on the
    platform ``api_url`` names (eMAG Romania for a sandbox or a proxy). Reads first: a registered install,
    or a read-only role, writes nothing."""
    wanted = list(kinds)
    have = {account.name for account in list_accounts(engine, include_removed=True)}
    missing = [kind for kind in wanted if kind.value not in have]
    if missing:
        platform = platform_of_url(api_url) or DEFAULT_PLATFORM
        with engine.begin() as conn:
            for kind in missing:
                conn.execute(
                    insert(accounts)
                    .values(name=kind.value, kind=kind.value, platform=platform.code)
                    .on_conflict_do_nothing(index_elements=[accounts.c.name])
                )
    return [account for account in list_accounts(engine) if account.name in {k.value for k in wanted}]


def select_accounts(
    engine: Engine | Connection, selection: str | Sequence[str], *, seller: str | None = None
) -> list[Account]:
    """``all``, ``both`` (main and fbe), or names (``ro-main,bg-main``) to registered accounts, in the
    order asked (``all``: by name). ``seller`` keeps that seller's. ConfigError naming the registered
    accounts for an unknown name; a disabled account named explicitly is refused, ``all`` skips it."""
    parts = [selection] if isinstance(selection, str) else list(selection)
    wanted = [p.strip().lower() for part in parts for p in part.split(",") if p.strip()]
    registered = {account.name: account for account in list_accounts(engine)}
    if not wanted:
        raise ConfigError("no account given: name one or more (comma-separated), or `all`")
    chosen: list[Account] = []
    for word in wanted:
        if word == "all":
            found = [a for a in registered.values() if a.enabled]
        elif word == "both":
            found = [registered[n] for n in ("main", "fbe") if n in registered]
            if len(found) < 2:
                raise unknown_account(engine, "main" if "main" not in registered else "fbe")
        elif word in registered:
            found = [registered[word]]
            if not found[0].enabled:
                raise ConfigError(f"account {word} is disabled (`emag-sync accounts enable {word}`)")
        else:
            raise unknown_account(engine, word)
        chosen += [account for account in found if account not in chosen]
    if seller is not None:
        chosen = [account for account in chosen if (account.seller or "") == seller.strip()]
        if not chosen:
            raise ConfigError(f"no enabled account of seller {seller!r} among {', '.join(wanted)}")
    return chosen


def _register_legacy_used(engine: Engine, settings: Settings, named: set[str], *, configured: bool) -> None:
    """Register ``main`` / ``fbe`` where an install of before accounts were data uses them, once their
    credentials are found (the environment, .env or their Secret blocks): named (``both`` names the two),
    or, with ``configured``, whenever their credentials are there. One named but without credentials, and
    not registered yet, is refused as before (MissingCredentialsError naming the variables), and nothing is
    registered for it: a failed first command must not leave an account behind."""
    from emag_sync.api.credentials import credential_sources

    have = {account.name for account in list_accounts(engine, include_removed=True)}
    wanted, missing = [], []
    for kind in AccountType:
        asked = kind.value in named or "both" in named
        if kind.value in have or not (asked or configured):
            continue
        account = legacy_account(kind)
        if all(credential_sources(settings, account).values()):
            wanted.append(kind)
        elif asked:
            missing.append(account)
    if wanted:
        register_legacy(engine, wanted, settings.emag_api_url)
    if missing:
        problems = []
        for account in missing:
            try:
                settings.account_config(account)
            except MissingCredentialsError as exc:
                problems.append(exc)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise ConfigError("; ".join(str(exc) for exc in problems))


def resolve_accounts(
    engine: Engine, selection: str | Sequence[str], *, seller: str | None = None, settings: Settings
) -> list[Account]:
    """The accounts a command or flow run names (``all``, ``both``, names), registering ``main`` / ``fbe``
    where they are used (``all``: those whose credentials the environment has)."""
    parts = [selection] if isinstance(selection, str) else list(selection)
    words = {p.strip().lower() for part in parts for p in part.split(",") if p.strip()}
    _register_legacy_used(engine, settings, words, configured="all" in words)
    return select_accounts(engine, parts, seller=seller)


def input_accounts(engine: Engine, settings: Settings, names: Iterable[str] = ()) -> dict[str, Account]:
    """The accounts operator input (a price CSV's account column, an option) may name, by name: the enabled
    registered ones, after registering ``main`` / ``fbe`` where it names them or they have credentials."""
    _register_legacy_used(engine, settings, {name.strip().lower() for name in names}, configured=True)
    return accounts_by_name(engine)
