"""eMAG's per-account budget shared across processes and workers through a Prefect global concurrency limit."""

from __future__ import annotations

import logging
import threading

import httpx

from emag_sync.settings import AccountConfig, AccountType
from tasks.ratelimit import Limiter, limiter_for

log = logging.getLogger(__name__)

GCL_NAME_PREFIX = "emag-api-"
# One slot that frees itself at eMAG's per-second rate (EMAG_REQUESTS_PER_SECOND, 3) spaces every caller's
# requests >= 1/3 s apart, so no 1-second window can hold more than 3. A limit of 3 would admit a burst of
# 3 plus 3 refills in one second (measured: 5 in a 1-second window with two callers), which eMAG answers 429.
GCL_LIMIT = 1


def gcl_name(account: AccountType) -> str:
    """``emag-api-main`` / ``emag-api-fbe``: the global concurrency limit pacing one account."""
    return f"{GCL_NAME_PREFIX}{account.value}"


class PrefectRateLimiter:
    """Paces one account across processes: the in-process limiter first, then a slot of the Prefect GCL.

    The in-process sliding window also enforces the per-minute budget, which one decaying limit cannot
    express. If the Prefect API fails mid-run, this degrades to the in-process limiter with a warning
    instead of failing the sync.
    """

    def __init__(self, limit_name: str, local: Limiter | None = None) -> None:
        self.limit_name = limit_name
        self.local = local
        self._degraded = False

    def __repr__(self) -> str:
        return f"PrefectRateLimiter({self.limit_name!r}, local={self.local!r})"

    def acquire(self) -> None:
        """Block until this account may send one more request, counting every caller of the account."""
        from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
        from prefect.concurrency.sync import rate_limit

        if self.local is not None:
            self.local.acquire()
        if self._degraded:
            return
        try:
            rate_limit(self.limit_name, occupy=1, strict=True)
        except ConcurrencySlotAcquisitionError as exc:
            self._degraded = True
            log.warning(
                "global rate limit %r unavailable (%s); pacing this process alone from now on",
                self.limit_name,
                exc,
            )


_decisions: dict[tuple[str, AccountType], bool] = {}
_decisions_lock = threading.Lock()


def _gcl_usable(name: str) -> bool:
    """True when the Prefect API answers and has this limit with slot decay (needed for rate limiting)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        log.warning(
            "global concurrency limit %r not found (run `emag-sync setup-prefect`); pacing per process", name
        )
        return False
    except httpx.TransportError as exc:
        log.debug("Prefect API unreachable (%s); pacing per process", type(exc).__name__)
        return False
    if not limit.active or limit.slot_decay_per_second <= 0:
        log.warning("global concurrency limit %r is inactive or has no slot decay; pacing per process", name)
        return False
    return True


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
        usable = _decisions.get(key)
        if usable is None:
            usable = _decisions[key] = _gcl_usable(name)
    return PrefectRateLimiter(name, local=local) if usable else local
