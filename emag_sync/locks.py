"""PostgreSQL advisory locks: one per account keeps two syncs from writing at once; another tells the
price runs that are still sending from the ones that died mid-way; one per offer puts two updates of the
same offer one after the other; one per eMAG login says which process spends its budget (its key space is
here, the lease itself in ``emag_sync.api.lease``)."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from emag_sync.accounts import Account, AccountType
from emag_sync.errors import SyncLockedError

log = logging.getLogger(__name__)


def release_and_close(conn: Connection, release: Callable[[], object], label: str, what: str) -> None:
    """Run ``release`` (a lock's unlock) on ``conn``, commit and close it. A connection that is gone took its
    locks with it: that is logged (``label: releasing what failed``) and the connection dropped, never
    raised."""
    try:
        release()
        conn.commit()
    except SQLAlchemyError as exc:
        log.warning("%s: releasing %s failed (%s); dropping its connection", label, what, exc)
        conn.invalidate()
    finally:
        conn.close()


# Advisory lock keys (two int4 form): a namespace for emag-sync, then one key per account.
LOCK_NAMESPACE = 0x656D6173  # "emas"
# The accounts of earlier versions keep their keys, so a process of the previous version is still excluded.
_LEGACY_KEYS = {AccountType.MAIN.value: 1, AccountType.FBE.value: 2}


def account_key(name: str) -> int:
    """The account's lock key: a stable 31-bit number of its name (a collision only serialises two)."""
    return _LEGACY_KEYS.get(name) or (zlib.crc32(name.encode()) & 0x7FFFFFFF) | 0x100


_HOLDER_SQL = text(
    """
SELECT a.pid, a.state_change, a.client_addr, a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = :namespace AND l.objid = :key AND l.objsubid = 2
"""
)


def _keys(account: Account) -> dict[str, int]:
    return {"namespace": LOCK_NAMESPACE, "key": account_key(account.name)}


def _holder(conn: Connection, account: Account) -> str:
    """Who holds the account's lock, for the error message (best effort)."""
    try:
        row = conn.execute(_HOLDER_SQL, _keys(account)).first()
    except DBAPIError:
        return ""
    if row is None:
        return ""
    since = f" since {row.state_change:%Y-%m-%d %H:%M:%S %Z}" if row.state_change else ""
    return f" (pid {row.pid}{since})"


def _locked_error(conn: Connection, account: Account) -> SyncLockedError:
    return SyncLockedError(
        f"another sync of this account is running{_holder(conn, account)}; try again when it has finished",
        account=account,
    )


def is_locked(engine: Engine, account: Account) -> bool:
    """Whether a sync holds the account's lock now (a live process: PostgreSQL drops a dead one's lock)."""
    with engine.connect() as conn:
        query = text("SELECT pg_try_advisory_lock(:namespace, :key)")
        taken: bool = conn.execute(query, _keys(account)).scalar_one()
        if taken:
            conn.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"), _keys(account))
        conn.commit()
        return not taken


def check_unlocked(engine: Engine, account: Account) -> None:
    """Raise SyncLockedError when another sync holds the account's lock (taken and released at once)."""
    with engine.connect() as conn:
        if not conn.execute(
            text("SELECT pg_try_advisory_lock(:namespace, :key)"), _keys(account)
        ).scalar_one():
            raise _locked_error(conn, account)
        conn.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"), _keys(account))
        conn.commit()


@contextmanager
def account_lock(engine: Engine, account: Account, *, wait: bool = False) -> Iterator[bool]:
    """Hold the account's PostgreSQL advisory lock for the whole block, on a dedicated connection.

    A second sync of the same account waits (``wait=True``) or fails at once with SyncLockedError.
    Yields whether it had to wait (another sync ran meanwhile). The lock is session-level: released on
    exit, and by PostgreSQL when the process dies.
    """
    keys = _keys(account)
    conn = engine.connect()
    try:
        waited = False
        if not conn.execute(text("SELECT pg_try_advisory_lock(:namespace, :key)"), keys).scalar_one():
            if not wait:
                raise _locked_error(conn, account)
            log.info("%s: another sync of this account is running; waiting for it to finish", account.title)
            conn.execute(text("SELECT pg_advisory_lock(:namespace, :key)"), keys)
            waited = True
        conn.commit()  # session-level lock outlives the transaction; the connection stays idle, not in txn
    except BaseException:
        conn.close()
        raise
    try:
        yield waited
    finally:
        unlock = text("SELECT pg_advisory_unlock(:namespace, :key)")
        release_and_close(conn, lambda: conn.execute(unlock, keys), account.title, "the sync lock")


# --- price runs ---------------------------------------------------------------------------------------
# (A stock run is a price run here: both send offer updates through emag_sync.prices.apply, and one lock
# tells the live ones of either kind from the dead.)
# Every price run holds its account's price lock SHARED while it sends (several may send at once); the
# reconciler takes it EXCLUSIVE, without waiting, before it treats 'sending' audit rows as interrupted: it
# gets it only when no price run of the account is alive, since PostgreSQL drops a dead process's locks.
PRICE_LOCK_NAMESPACE = 0x656D6170  # "emap"

_PRICE_SENDERS_SQL = text(
    """
SELECT DISTINCT l.objid
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.mode = 'ShareLock' AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = :namespace AND l.objsubid = 2
"""
)


def _price_keys(account: Account) -> dict[str, int]:
    return {"namespace": PRICE_LOCK_NAMESPACE, "key": account_key(account.name)}


def try_price_reconcile_lock(conn: Connection, account: Account) -> bool:
    """Take the account's price lock exclusive on ``conn`` (session-level) if no price run holds it."""
    return bool(
        conn.execute(text("SELECT pg_try_advisory_lock(:namespace, :key)"), _price_keys(account)).scalar_one()
    )


def try_price_reconcile_xact_lock(conn: Connection, account: Account) -> bool:
    """The same, for ``conn``'s transaction only (released at its commit or rollback)."""
    return bool(
        conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:namespace, :key)"), _price_keys(account)
        ).scalar_one()
    )


def release_price_reconcile_lock(conn: Connection, account: Account) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"), _price_keys(account))


def hold_price_send_lock(conn: Connection, account: Account) -> None:
    """Take the account's price lock shared on ``conn`` (waits only while a reconciler holds it)."""
    conn.execute(text("SELECT pg_advisory_lock_shared(:namespace, :key)"), _price_keys(account))


def release_price_send_lock(conn: Connection, account: Account) -> None:
    conn.execute(text("SELECT pg_advisory_unlock_shared(:namespace, :key)"), _price_keys(account))


def price_senders(conn: Connection) -> set[int]:
    """The lock keys (``account_key``) of the accounts a live price run is sending for right now (read from
    pg_locks, nothing taken)."""
    return set(conn.execute(_PRICE_SENDERS_SQL, {"namespace": PRICE_LOCK_NAMESPACE}).scalars())


@contextmanager
def price_run_lock(
    engine: Engine, account: Account, reconcile: Callable[[], object] | None = None
) -> Iterator[None]:
    """Hold the account's price lock shared for the block, on a dedicated connection.

    ``reconcile`` runs first with the lock exclusive, only when no other price run of the account is
    alive: then every 'sending' row of the account belongs to a run that died. When another run is
    sending, it is skipped (those rows may be that run's). Released on exit, or by PostgreSQL when the
    process dies.
    """
    conn = engine.connect()
    try:
        if reconcile is not None and try_price_reconcile_lock(conn, account):
            conn.commit()
            try:
                reconcile()
                hold_price_send_lock(conn, account)  # the same session: granted at once
            finally:
                release_price_reconcile_lock(conn, account)
        else:
            if reconcile is not None:
                log.info(
                    "%s: another price run of this account is sending; its interrupted updates wait",
                    account.title,
                )
            hold_price_send_lock(conn, account)
        conn.commit()
    except BaseException:
        conn.close()
        raise
    try:
        yield
    finally:
        release_and_close(
            conn, lambda: release_price_send_lock(conn, account), account.title, "the price lock"
        )


# --- one offer's updates --------------------------------------------------------------------------------
# Two updates of one offer at once must reach eMAG and the database in the same order: each holds the
# offer's lock from its intent to its confirmation. Single-bigint keys (pg_locks objsubid 1, apart from the
# two-int4 locks above): the account's namespace in the high 32 bits, the eMAG offer id in the low 32.
# eMAG offer ids are at most 32 bits; the account's part is its key, offset so it never meets the others.
OFFER_LOCK_BASE = 0x656D6F00  # "emo"


def _offer_key(account: Account, emag_offer_id: int) -> int:
    high = (OFFER_LOCK_BASE + account_key(account.name)) & 0x7FFFFFFF
    return (high << 32) | emag_offer_id


@contextmanager
def offer_update_locks(
    engine: Engine, account: Account, emag_offer_ids: Iterable[int]
) -> Iterator[datetime | None]:
    """Hold the price-update lock of each offer for the block, on a dedicated connection.

    Another run updating one of these offers waits until this block ends (its confirmation recorded), so
    the later save reaches eMAG after the earlier one's outcome is in the database. Yields when it began
    waiting for such a run (None when it did not wait): prices pushed since then are newer than what the
    caller read. Keys are taken in order, so two runs sharing offers never deadlock. Released on exit, or
    by PostgreSQL when the process dies.
    """
    keys = sorted({_offer_key(account, offer_id) for offer_id in emag_offer_ids})
    conn = engine.connect()
    try:
        waited_since = None
        for key in keys:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar_one():
                if waited_since is None:
                    log.info("%s: another price update of these offers is sending; waiting", account.title)
                    waited_since = datetime.now(UTC)
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        conn.commit()
    except BaseException:
        conn.close()
        raise
    try:
        yield waited_since
    finally:
        unlock_all = text("SELECT pg_advisory_unlock_all()")  # this connection holds only these
        release_and_close(conn, lambda: conn.execute(unlock_all), account.title, "the offer locks")


# --- one login's eMAG budget --------------------------------------------------------------------------
# Two-int4 keys like the account and price locks, in a namespace of their own (so never one of theirs), and
# apart from the offer locks' single-bigint keys (pg_locks objsubid 1, not 2).
BUDGET_LOCK_NAMESPACE = 0x656D6162  # "emab"


def budget_key(api_url: str, username: str) -> int:
    """The lock key of one eMAG login: a stable 31-bit number of its API URL and username (a collision only
    makes two logins take turns)."""
    return zlib.crc32(f"{api_url.rstrip('/')}\n{username}".encode()) & 0x7FFFFFFF
