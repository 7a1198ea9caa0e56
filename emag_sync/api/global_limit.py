"""eMAG's per-account budget shared across processes and workers through a Prefect global concurrency limit."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import httpx

from emag_sync.accounts import Account
from emag_sync.api.ratelimit import DEFAULT_MARGIN_SECONDS, SECOND_WINDOW, Limiter, limiter_for
from emag_sync.prefect_api import mark_lost
from emag_sync.settings import AccountConfig

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

log = logging.getLogger(__name__)

GCL_NAME_PREFIX = "emag-api-"
# One slot that frees itself at eMAG's per-second rate (EMAG_REQUESTS_PER_SECOND, 3) spaces every caller's
# requests >= 1/3 s apart, so no 1-second window can hold more than 3. A limit of 3 would admit a burst of
# 3 plus 3 refills in one second (measured: 5 in a 1-second window with two callers), which eMAG answers 429.
GCL_LIMIT = 1
# A refused request asks again this many times per slot period (every 1/12 s at 3/s), so it is at most that
# late once the slot frees; a refusal does not push the slot's decay back (measured), so asking often costs
# the API a call, not the caller its turn. Prefect's own `rate_limit` sleeps the server's Retry-After instead:
# random, 0.25-0.43 s at 3/s (more as refusals pile up), about a whole slot lost on every refusal.
GCL_RETRIES_PER_SLOT = 4
HTTP_LOCKED = 423  # the Prefect API's answer when the slot is taken
# A busy Prefect server (SQLite under load answers 503 now and then) is asked again like a refusal; this many
# in a row (about 2 s at 3/s) and the process paces itself alone.
GCL_BUSY_STATUSES = frozenset({429, 502, 503, 504})
GCL_BUSY_ATTEMPTS = 24
GCL_REQUEST_TIMEOUT_SECONDS = 2.0
# A send at most this late (a busy GIL wakes a sleeping thread up to 5 ms late) keeps the next one on the even
# grid, so small delays do not add up and lower the rate; it leaves the GCL ~23 ms instead of 1/30 s of
# spacing to spare at 3/s. A later send (an idle caller, a refusal) starts the grid afresh from itself.
GCL_LATE_TOLERANCE_SECONDS = 0.01
# After a slow answer (the grant may have been made as late as the answer came) the next request waits until
# the slot has surely decayed, plus this for the server's millisecond timestamps: a slow API then costs its
# delay, not a refusal.
GCL_DECAY_SLACK_SECONDS = 0.005


def gcl_name(account: Account) -> str:
    """``emag-api-main`` / ``emag-api-fbe``: the global concurrency limit pacing one account."""
    return f"{GCL_NAME_PREFIX}{account.name}"


class PrefectRateLimiter:
    """Paces one account across processes: the in-process limiter first, then a slot of the Prefect GCL.

    The in-process sliding window also enforces the per-minute budget, which one decaying limit cannot
    express. Requests of this limiter then ask the GCL evenly spaced, ``(1 s + margin) / decay`` apart: the
    same 3 per 1.08 s the local window allows, but never 3 at once, so each finds the slot already decayed
    (with margin/3, about 27 ms at 3/s, to spare for the round trip's jitter) instead of being refused. A refused request
    (another process took the slot) asks again after a short fixed wait. If the Prefect API fails mid-run,
    this degrades to the in-process limiter with a warning instead of failing the sync.
    """

    def __init__(
        self, limit_name: str, local: Limiter | None = None, *, slot_decay_per_second: float
    ) -> None:
        if slot_decay_per_second <= 0:
            raise ValueError(f"{limit_name}: slot decay must be positive, got {slot_decay_per_second}/s")
        self.limit_name = limit_name
        self.local = local
        self.slot_decay_per_second = slot_decay_per_second
        self._spacing = (SECOND_WINDOW + DEFAULT_MARGIN_SECONDS) / slot_decay_per_second
        self._slot_seconds = 1 / slot_decay_per_second
        self._retry_wait = self._slot_seconds / GCL_RETRIES_PER_SLOT
        self._degraded = False
        # One GCL request at a time, in spacing order; the next may be sent at this monotonic time.
        self._gcl_lock = threading.Lock()
        self._next_send = 0.0

    def __repr__(self) -> str:
        return f"PrefectRateLimiter({self.limit_name!r}, local={self.local!r})"

    def acquire(self) -> None:
        """Block until this account may send one more request, counting every caller of the account."""
        if self.local is not None:
            self.local.acquire()
        if self._degraded:
            return
        with self._gcl_lock:
            wait = self._next_send - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._take_slot()
        if self._degraded and self.local is not None:
            # The limit went away while this request waited for it, long after the local window let it go:
            # requests queued that way would leave together. Pace it again, alone.
            self.local.acquire()

    def _take_slot(self) -> None:
        """Take the GCL's slot, asking again while another caller holds it or the server is briefly busy."""
        client = _prefect_client()
        busy = 0
        while not self._degraded:
            sent = time.monotonic()
            try:
                response = _ask_once(client, self.limit_name)
            except httpx.HTTPError as exc:  # unreachable or not answering in time: gone for this run
                self._degrade(type(exc).__name__, lost=True)
                return
            status = response.status_code
            if status == HTTP_LOCKED or status in GCL_BUSY_STATUSES:
                busy = busy + 1 if status != HTTP_LOCKED else 0
                if busy > GCL_BUSY_ATTEMPTS:
                    self._degrade(f"HTTP {status} {busy} times in a row", lost=True)
                    return
                time.sleep(self._retry_wait)
                continue
            if status >= 400:
                self._degrade(f"HTTP {status}")
                return
            if not response.json():  # the limit was deleted: the server grants nothing and says so
                self._degrade("limit not found")
                return
            # Spaced from the send, not the answer, so the API's round trip does not lower the rate.
            on_grid = sent - self._next_send <= GCL_LATE_TOLERANCE_SECONDS
            decayed = time.monotonic() + self._slot_seconds + GCL_DECAY_SLACK_SECONDS
            self._next_send = max((self._next_send if on_grid else sent) + self._spacing, decayed)
            return

    def _degrade(self, reason: str, *, lost: bool = False) -> None:
        self._degraded = True
        if lost:
            mark_lost(f"its global rate limit {self.limit_name!r}: {reason}")
        log.warning(
            "global rate limit %r unavailable (%s); pacing this process alone from now on",
            self.limit_name,
            reason,
        )


def _ask_once(client: SyncPrefectClient, name: str) -> httpx.Response:
    """One slot request, answered or not within GCL_REQUEST_TIMEOUT_SECONDS.

    Not through the Prefect client's own retry loop: it sleeps seconds per retry (and 2 s on a 503) while
    every request of the account waits behind it, so a dead or busy API would slow the sync to a crawl.
    Refusals and a busy server are asked again here, a fraction of a slot later.
    """
    http = client._client  # the client's httpx.Client: its base URL, headers and auth
    request = http.build_request(
        "POST",
        "/v2/concurrency_limits/increment",
        json={"names": [name], "slots": 1, "mode": "rate_limit"},
        timeout=GCL_REQUEST_TIMEOUT_SECONDS,
    )
    return httpx.Client.send(http, request)


_clients: dict[str, SyncPrefectClient] = {}
_clients_lock = threading.Lock()


def _prefect_client() -> SyncPrefectClient:
    """One open Prefect API client per process and API URL, as Prefect keeps for its own slot requests."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url or ""
    with _clients_lock:
        client = _clients.get(api_url)
        if client is None:
            client = _clients[api_url] = get_client(sync_client=True).__enter__()
        return client


# Per Prefect API and account: the limit's slot decay, or None when the limit cannot be used.
_decisions: dict[tuple[str, Account], float | None] = {}
_decisions_lock = threading.Lock()


def _gcl_decay(name: str) -> float | None:
    """The limit's slot decay per second when the Prefect API answers and has it active with decay, else None."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        log.warning(
            "global concurrency limit %r not found (run `emag-sync setup-prefect`); pacing per process", name
        )
        return None
    except httpx.TransportError as exc:
        log.debug("Prefect API unreachable (%s); pacing per process", type(exc).__name__)
        return None
    if not limit.active or limit.slot_decay_per_second <= 0:
        log.warning("global concurrency limit %r is inactive or has no slot decay; pacing per process", name)
        return None
    return limit.slot_decay_per_second


def shared_limiter_for(config: AccountConfig) -> Limiter:
    """The limiter a client of this account should use: Prefect-wide when possible, else in-process.

    Only a server named by PREFECT_API_URL counts: the temporary server Prefect starts without it belongs to
    this process alone, so it cannot pace anyone else. The decision (one API call) is made once per
    process, Prefect API and account.
    """
    from prefect.settings import get_current_settings

    local = limiter_for(config)
    api_url = get_current_settings().api.url
    if not api_url:
        return local
    name = gcl_name(config.account)
    key = (api_url, config.account)
    with _decisions_lock:
        if key not in _decisions:
            _decisions[key] = _gcl_decay(name)
        decay = _decisions[key]
    return local if decay is None else PrefectRateLimiter(name, local=local, slot_decay_per_second=decay)
