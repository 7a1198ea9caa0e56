"""The per-account PostgreSQL advisory lock that keeps two syncs of one account from writing at once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from emag_sync.accounts import AccountType
from emag_sync.errors import SyncLockedError

log = logging.getLogger(__name__)

# Advisory lock keys (two int4 form): a namespace for emag-sync, then one key per account.
LOCK_NAMESPACE = 0x656D6173  # "emas"
_LOCK_KEYS = {AccountType.MAIN: 1, AccountType.FBE: 2}

_HOLDER_SQL = text(
    """
SELECT a.pid, a.state_change, a.client_addr, a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = :namespace AND l.objid = :key AND l.objsubid = 2
"""
)


def _keys(account: AccountType) -> dict[str, int]:
    return {"namespace": LOCK_NAMESPACE, "key": _LOCK_KEYS[account]}


def _holder(conn: Connection, account: AccountType) -> str:
    """Who holds the account's lock, for the error message (best effort)."""
    try:
        row = conn.execute(_HOLDER_SQL, _keys(account)).first()
    except DBAPIError:
        return ""
    if row is None:
        return ""
    since = f" since {row.state_change:%Y-%m-%d %H:%M:%S %Z}" if row.state_change else ""
    return f" (pid {row.pid}{since})"


def _locked_error(conn: Connection, account: AccountType) -> SyncLockedError:
    return SyncLockedError(
        f"another sync of this account is running{_holder(conn, account)}; try again when it has finished",
        account=account,
    )


def is_locked(engine: Engine, account: AccountType) -> bool:
    """Whether a sync holds the account's lock now (a live process: PostgreSQL drops a dead one's lock)."""
    with engine.connect() as conn:
        query = text("SELECT pg_try_advisory_lock(:namespace, :key)")
        taken: bool = conn.execute(query, _keys(account)).scalar_one()
        if taken:
            conn.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"), _keys(account))
        conn.commit()
        return not taken


def check_unlocked(engine: Engine, account: AccountType) -> None:
    """Raise SyncLockedError when another sync holds the account's lock (taken and released at once)."""
    with engine.connect() as conn:
        if not conn.execute(
            text("SELECT pg_try_advisory_lock(:namespace, :key)"), _keys(account)
        ).scalar_one():
            raise _locked_error(conn, account)
        conn.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"), _keys(account))
        conn.commit()


@contextmanager
def account_lock(engine: Engine, account: AccountType, *, wait: bool = False) -> Iterator[bool]:
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
            log.info("%s: another sync of this account is running; waiting for it to finish", account.value)
            conn.execute(text("SELECT pg_advisory_lock(:namespace, :key)"), keys)
            waited = True
        conn.commit()  # session-level lock outlives the transaction; the connection stays idle, not in txn
    except BaseException:
        conn.close()
        raise
    try:
        yield waited
    finally:
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:namespace, :key)"), keys)
            conn.commit()
        except SQLAlchemyError as exc:  # the connection is gone, and with it the lock
            log.warning(
                "%s: releasing the sync lock failed (%s); dropping its connection", account.value, exc
            )
            conn.invalidate()
        finally:
            conn.close()
