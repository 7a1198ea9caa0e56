"""One process at a time spends an eMAG login's budget: a PostgreSQL advisory lock held while it sends,
handed over at a request boundary when another process waits for it."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from emag_sync.api.ratelimit import SlidingWindowLimiter, limiter_for
from emag_sync.errors import BudgetBusyError
from emag_sync.locks import BUDGET_LOCK_NAMESPACE, budget_key, release_and_close
from emag_sync.settings import AccountConfig

log = logging.getLogger(__name__)

# A holder asks whether another process waits at most this often: one query on the lease's own
# connection, never one per request.
LEASE_CHECK_SECONDS = 2.0
# ... and hands the budget over only after holding it this long: each handover idles the login for about
# one window (1.08 s at 3/s), so two busy processes take turns of this length instead of every request.
LEASE_TURN_SECONDS = 5.0
# A process waits at most this long for the budget (a holder hands over within a turn, its requests in
# flight and a window), then fails naming the account: a holder that never lets go is stuck.
LEASE_WAIT_SECONDS = 300
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired

_KEYS_SQL = "(:namespace, :key)"
_WAITING_SQL = text(
    """
SELECT EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND NOT l.granted AND l.database = (
            SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = :namespace AND l.objid = :key AND l.objsubid = 2)
"""
)
_HOLDER_SQL = text(
    """
SELECT l.pid FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = :namespace AND l.objid = :key AND l.objsubid = 2
"""
)


class BudgetLease:
    """The budget of one login (API URL + username) in this process: its limiter, and the lock saying this
    process may spend it.

    Taken on the first request (not when a client opens), on a connection of its own; every client of the
    login in this process shares it and the limiter. While held, a watcher asks every LEASE_CHECK_SECONDS
    whether another process waits; if one does (and this process held it LEASE_TURN_SECONDS), no new
    request is let go, the ones in flight are answered, one window passes after the last answer (so eMAG
    no longer counts them), and the lock is released: the waiting process takes it, this one queues behind
    it for its next request. When the last client closes, it is released a window after the last answer,
    unless a client of the login in this process (the sync after the preflight's count) uses it first. A
    process that dies loses it with its connection.
    """

    def __init__(self, key: int, label: str, database: URL, limiter: SlidingWindowLimiter) -> None:
        self.key = key
        self.label = label
        self.limiter = limiter
        # No pool: the lease's one connection lives only while it is held or waited for.
        self._engine = create_engine(
            database,
            poolclass=NullPool,
            connect_args={"connect_timeout": 10, "options": f"-c lock_timeout={LEASE_WAIT_SECONDS}s"},
        )
        self._keys = {"namespace": BUDGET_LOCK_NAMESPACE, "key": key}
        self._cond = threading.Condition()
        self._take_lock = threading.Lock()  # one thread of this process queues for the lock
        # The watcher and a closing client never use the connection at once.
        self._conn_lock = threading.Lock()
        self._conn: Connection | None = None
        self._held = False
        self._handing_over = False
        self._held_since = 0.0
        self._in_flight = 0
        self._last_answer = -math.inf
        self._released = threading.Event()
        self._generation = 0  # one per taking: a watcher of an earlier one stops
        self.users = 0
        self.handovers = 0  # times this process let another have the budget (tests, logs)

    def __repr__(self) -> str:
        return f"BudgetLease({self.label!r}, held={self._held})"

    def acquire(self) -> float:
        """Block until this process holds the budget and its limiter lets one more request go."""
        self._hold()
        try:
            return self.limiter.acquire()
        except BaseException:
            self._done()
            raise

    def went(self, sent: float) -> None:
        self.limiter.went(sent)

    def answered(self, sent: float, headers: Mapping[str, str]) -> None:
        """A request let go by ``acquire`` is over: its headers to the limiter, and one fewer in flight."""
        self.limiter.answered(sent, headers)
        self._done()

    def share(self) -> None:
        """One more client of the login in this process."""
        with self._cond:
            self.users += 1

    def unshare(self) -> None:
        """One client fewer; the last one's closing releases the budget (see ``release``)."""
        with self._cond:
            self.users -= 1
            last = self.users == 0
        if last:
            self.release()

    def release(self) -> None:
        """The process's last client of the login closed: the budget goes back once eMAG no longer counts its
        requests (a window after the last answer), unless a client of the login in this process asks first.

        In a thread of its own, not a daemon, so the closing client does not wait and the interpreter waits
        for it at exit (a process that ended holding it would give it back too early).
        """
        threading.Thread(target=self._release_when_quiet, name=f"emag-budget-{self.key}-release").start()

    def _release_when_quiet(self) -> None:
        with self._cond:
            quiet = self._last_answer + self.limiter.window_seconds - time.monotonic()
        if quiet > 0:
            time.sleep(quiet)
        self._hand_over(unless_used=True)

    def _done(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._last_answer = time.monotonic()
            self._cond.notify_all()

    def _hold(self) -> None:
        while True:
            with self._cond:
                while self._handing_over:
                    self._cond.wait()
                if self._held:
                    self._in_flight += 1
                    return
            with self._take_lock:
                with self._cond:
                    if self._held or self._handing_over:
                        continue
                self._take()

    def _take(self) -> None:
        conn = self._engine.connect()
        try:
            taken: bool = conn.execute(
                text(f"SELECT pg_try_advisory_lock{_KEYS_SQL}"), self._keys
            ).scalar_one()
            if not taken:
                holder = conn.execute(_HOLDER_SQL, self._keys).scalar()
                log.info(
                    "%s: waiting for this account's eMAG budget, held by another process%s",
                    self.label,
                    f" (database pid {holder})" if holder is not None else "",
                )
                try:
                    conn.execute(text(f"SELECT pg_advisory_lock{_KEYS_SQL}"), self._keys)
                except OperationalError as exc:
                    if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                        raise
                    raise BudgetBusyError(
                        f"another process has held this account's eMAG budget for {LEASE_WAIT_SECONDS} s "
                        "without handing it over; find it (`emag-sync runs`, pg_stat_activity) and try again"
                    ) from None
            conn.commit()  # a session-level lock: the connection stays idle, not in a transaction
        except BaseException:
            conn.close()
            raise
        with self._cond:
            self._conn = conn
            self._held = True
            self._held_since = time.monotonic()
            self._released.clear()
            self._generation += 1
            generation = self._generation
            self._cond.notify_all()
        threading.Thread(
            target=self._watch, args=(generation,), name=f"emag-budget-{self.key}", daemon=True
        ).start()

    def _watch(self, generation: int) -> None:
        """While held: hand over when another process waits (and this one had its turn)."""
        while not self._released.wait(LEASE_CHECK_SECONDS):
            if time.monotonic() - self._held_since < LEASE_TURN_SECONDS:
                continue
            try:
                with self._conn_lock:
                    if self._conn is None or self._generation != generation:
                        return
                    waiting = bool(self._conn.execute(_WAITING_SQL, self._keys).scalar_one())
                    self._conn.commit()
            except SQLAlchemyError as exc:  # the connection, and with it the lock, is gone: take it again
                log.warning("%s: the eMAG budget's database connection failed (%s)", self.label, exc)
                waiting = True
            if waiting:
                log.debug(
                    "%s: another process waits for this account's eMAG budget; handing it over", self.label
                )
                self.handovers += 1
                self._hand_over()
                return

    def _hand_over(self, *, unless_used: bool = False) -> None:
        with self._conn_lock:
            with self._cond:
                if not self._held or (unless_used and self.users > 0):
                    return
                self._handing_over = True
                while self._in_flight > 0:
                    self._cond.wait()
                quiet = self._last_answer + self.limiter.window_seconds - time.monotonic()
            try:
                if quiet > 0:
                    time.sleep(quiet)  # eMAG still counts our last requests until then
                self._unlock()
            finally:
                with self._cond:
                    self._conn = None
                    self._held = False
                    self._handing_over = False
                    self._released.set()
                    self._cond.notify_all()

    def _unlock(self) -> None:
        conn = self._conn
        if conn is None:
            return
        release_and_close(
            conn,
            lambda: conn.execute(text(f"SELECT pg_advisory_unlock{_KEYS_SQL}"), self._keys),
            self.label,
            "the eMAG budget",
        )


class LeaseHandle:
    """One client's share of its login's lease (the client's ``limiter``): closing the last share of a
    process gives the budget back (see ``BudgetLease.release``)."""

    def __init__(self, lease: BudgetLease) -> None:
        self.lease = lease
        self._closed = False

    def __repr__(self) -> str:
        return f"LeaseHandle({self.lease!r})"

    def acquire(self) -> float:
        return self.lease.acquire()

    def went(self, sent: float) -> None:
        self.lease.went(sent)

    def answered(self, sent: float, headers: Mapping[str, str]) -> None:
        self.lease.answered(sent, headers)

    def close(self) -> None:
        with _leases_lock:
            if self._closed:
                return
            self._closed = True
        self.lease.unshare()


_leases: dict[tuple[str, int], BudgetLease] = {}
_leases_lock = threading.Lock()


def lease_for(config: AccountConfig, database: URL) -> LeaseHandle:
    """A share of the lease of this account's login, held in ``database`` (the one the sync writes to):
    one per process and login, with the process's limiter of that login (``limiter_for``)."""
    key = budget_key(config.api_url, config.username)
    where = (database.render_as_string(hide_password=False), key)
    limiter = limiter_for(config)
    with _leases_lock:
        lease = _leases.get(where)
        if lease is None:
            lease = _leases[where] = BudgetLease(key, config.account.title, database, limiter)
        lease.limiter = limiter  # the registry's: a new one when the configured rate changed
        lease.share()
    return LeaseHandle(lease)
