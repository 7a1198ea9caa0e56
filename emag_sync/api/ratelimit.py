"""Per-account request budget: a thread-safe sliding-window limiter shared by every client of one account."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from emag_sync.settings import AccountConfig

logger = logging.getLogger(__name__)

SECOND_WINDOW = 1.0
MINUTE_WINDOW = 60.0
# Our clock is not eMAG's: a request granted at t leaves a little later — later still when a busy process
# (transform, load, an import) keeps the sending thread from the GIL — and an earlier request sent late
# can share eMAG's window with a later one sent on time. Widening our windows by 0.08 s costs ~7% of
# throughput at 3/s (3 per 1.08 s = 2.78/s): it keeps a little headroom above the 90% (2.7/s) the sync must
# sustain when requests are evenly spaced (the Prefect global limit's pacing), while 0.05 s drew the odd 429
# in the demo when the process was busy.
DEFAULT_MARGIN_SECONDS = 0.08


class Limiter(Protocol):
    """Anything that blocks until one more request of this account may be sent."""

    def acquire(self) -> None: ...


class SlidingWindowLimiter:
    """At most ``per_second`` requests in any 1-second window and ``per_minute`` in any 60-second window.

    ``acquire`` computes the earliest allowed start under a lock and reserves it before sleeping, so
    concurrent callers queue up in order instead of racing for the same slot. On waking it checks the
    windows again against the times earlier requests really left (a thread starved of the CPU wakes late,
    and a late request would otherwise share eMAG's window with a later one on time). A fractional ``per_second``
    above 1 is rounded down (never exceed); below 1 it becomes one request per ``1 / per_second`` seconds.
    """

    def __init__(
        self,
        per_second: float,
        per_minute: int,
        *,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0 or per_minute <= 0:
            raise ValueError(f"rate limits must be positive, got {per_second}/s and {per_minute}/min")
        self.per_second = per_second
        self.per_minute = per_minute
        if per_second >= 1:
            self._short_count, self._short_window = math.floor(per_second), SECOND_WINDOW
        else:
            self._short_count, self._short_window = 1, 1 / per_second
        self._short_window += margin_seconds
        self._long_window = MINUTE_WINDOW + margin_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # Start times already granted (some may lie in the future), never decreasing.
        self._granted: deque[float] = deque()
        # When granted requests really went: the windows are confirmed against these on waking.
        self._released: deque[float] = deque()

    def __repr__(self) -> str:
        return f"SlidingWindowLimiter(per_second={self.per_second}, per_minute={self.per_minute})"

    def reserve(self) -> float:
        """Reserve the next free slot and return how long the caller must wait before using it."""
        with self._lock:
            now = self._clock()
            while self._granted and self._granted[0] <= now - self._long_window:
                self._granted.popleft()
            start = max(now, self._granted[-1]) if self._granted else now
            if len(self._granted) >= self._short_count:
                start = max(start, self._granted[-self._short_count] + self._short_window)
            if len(self._granted) >= self.per_minute:
                start = max(start, self._granted[-self.per_minute] + self._long_window)
            self._granted.append(start)
            return start - now

    def acquire(self) -> None:
        """Block until this request may be sent."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
        while (wait := self._confirm()) > 0:
            self._sleep(wait)

    def _confirm(self) -> float:
        """Record this request as sent now, or how much longer it must wait given when others really went."""
        with self._lock:
            now = self._clock()
            sent = self._released
            while sent and sent[0] <= now - self._long_window:
                sent.popleft()
            earliest = now
            if len(sent) >= self._short_count:
                earliest = max(earliest, sent[-self._short_count] + self._short_window)
            if len(sent) >= self.per_minute:
                earliest = max(earliest, sent[-self.per_minute] + self._long_window)
            if earliest > now:
                return earliest - now
            sent.append(now)
            return 0.0


_registry: dict[tuple[str, str], SlidingWindowLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(config: AccountConfig) -> Limiter:
    """The process-wide limiter of this login (API URL + username): one shared budget.

    eMAG counts every call of a login together, so all clients of one account, and of accounts registered
    with the same login on one platform, draw from the same limiter; two logins never share one. If the
    configured rates change, later clients get a fresh limiter with the new rates.
    """
    key = (config.api_url.rstrip("/"), config.username)
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None or (limiter.per_second, limiter.per_minute) != (
            config.requests_per_second,
            config.requests_per_minute,
        ):
            if limiter is not None:
                logger.warning(
                    "%s: rate limit changed to %s/s, %s/min; new clients use a new budget",
                    config.account.name,
                    config.requests_per_second,
                    config.requests_per_minute,
                )
            limiter = SlidingWindowLimiter(config.requests_per_second, config.requests_per_minute)
            _registry[key] = limiter
        return limiter
