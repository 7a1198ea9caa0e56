"""The eMAG Marketplace API client: one per account, owning HTTP, auth, pacing, retries and the envelope."""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx

from emag_sync.api.deadline import DeadlineTransport, environment_proxy, request_deadline
from emag_sync.api.paging import BY_ID, CatalogueCount, Page, PagePlan, PagingOverrun, check_items_per_page
from emag_sync.api.ratelimit import Limiter
from emag_sync.api.responses import CallSite, Envelope, Verdict, classify, parse_count, redact_headers
from emag_sync.api.salvage import UnreadableRecord
from emag_sync.errors import (
    EmagFilterIgnoredError,
    EmagPagingError,
    EmagResponseFormatError,
    EmagUnavailableError,
    EmagUncertainWriteError,
)
from emag_sync.limits import MAX_ENTITIES_PER_SAVE, MAX_ITEMS_PER_PAGE, MAX_OFFER_ID, MIN_OFFER_ID
from emag_sync.redact import redact_url
from emag_sync.settings import AccountConfig

logger = logging.getLogger(__name__)

DEFAULT_LOOK_AHEAD = 8  # pages in flight: covers 3 requests/s x ~2 s responses with room to spare
RETRY_AFTER_CAP_SECONDS = 120.0  # a Retry-After beyond this is not worth hanging a run for
CONNECT_TIMEOUT_SECONDS = 10.0
SENT = "emag_sync.sent"  # request extension: when the limiter let the request go (time.monotonic)


def _log_request(request: httpx.Request) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "sending %s %s headers=%s",
            request.method,
            redact_url(str(request.url)),
            redact_headers(request.headers),
        )


@dataclass(frozen=True)
class RequestCounters:
    """What a client sent: requests, 429 answers received, retries. Named like the run-history columns."""

    api_requests: int = 0
    rate_limited: int = 0
    retries: int = 0

    def __sub__(self, other: RequestCounters) -> RequestCounters:
        return RequestCounters(
            self.api_requests - other.api_requests,
            self.rate_limited - other.rate_limited,
            self.retries - other.retries,
        )


@dataclass
class ClientStats:
    """Thread-safe counters: requests sent, retries, 429s received, outcomes by HTTP status or error kind."""

    _counters: RequestCounters = RequestCounters()
    _by_status: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, outcome: str) -> None:
        with self._lock:
            limited = outcome == str(int(httpx.codes.TOO_MANY_REQUESTS))
            now = self._counters
            self._counters = RequestCounters(now.api_requests + 1, now.rate_limited + limited, now.retries)
            self._by_status[outcome] = self._by_status.get(outcome, 0) + 1

    def record_retry(self) -> None:
        with self._lock:
            now = self._counters
            self._counters = RequestCounters(now.api_requests, now.rate_limited, now.retries + 1)

    def counters(self) -> RequestCounters:
        """The counters at this moment (an immutable value)."""
        with self._lock:
            return self._counters

    @property
    def by_status(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_status)


class _Cancelled(Exception):
    """A look-ahead page request dropped because the read already ended."""


class EmagClient:
    """One eMAG account: Basic auth, pacing through its login's budget, retries, envelope check.

    Open one with ``emag_sync.api.open_client``, which brings the account's credentials and its shared rate
    budget. ``limiter`` paces every request (never optional: eMAG counts all of an account's calls);
    ``transport`` lets tests hand in the sandbox (the default ``DeadlineTransport`` is what bounds a whole
    attempt by ``timeout_seconds``, through the environment's proxy if it sets one); ``sleep`` and
    ``jitter`` replace backoff's waiting and
    randomness (tests make them instant or fixed); ``look_ahead`` is how many page requests
    ``iter_pages`` keeps in flight.
    """

    def __init__(
        self,
        config: AccountConfig,
        *,
        limiter: Limiter,
        transport: httpx.BaseTransport | None = None,
        look_ahead: int = DEFAULT_LOOK_AHEAD,
        sleep: Callable[[float], None] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if look_ahead < 1:
            raise ValueError(f"look_ahead must be >= 1, got {look_ahead}")
        self.config = config
        self.account = config.account
        self.stats = ClientStats()
        self._limiter = limiter
        self._look_ahead = look_ahead
        self._sleep = sleep
        self._jitter = jitter
        self._http = httpx.Client(
            base_url=config.api_url,
            auth=httpx.BasicAuth(config.username, config.password.get_secret_value()),
            timeout=httpx.Timeout(
                config.timeout_seconds, connect=min(CONNECT_TIMEOUT_SECONDS, config.timeout_seconds)
            ),
            headers={"Accept": "application/json", "User-Agent": "emag-sync"},
            transport=transport or DeadlineTransport(proxy=environment_proxy(config.api_url)),
            event_hooks={"request": [_log_request, self._leaving]},
        )

    def __repr__(self) -> str:
        return f"EmagClient(account={self.account.label}, api_url={redact_url(self.config.api_url)!r})"

    def __enter__(self) -> EmagClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._http.close()
        finally:
            self._limiter.close()  # the last client of a login in this process hands its budget over

    # --- reads -------------------------------------------------------------------------------------------

    def count(self, filters: Mapping[str, Any] | None = None) -> CatalogueCount:
        """How many offers match ``filters`` (``product_offer/count``), as integers."""
        data = {**(filters or {}), "itemsPerPage": MAX_ITEMS_PER_PAGE}
        envelope = self._send("product_offer", "count", data)
        return parse_count(envelope.results, CallSite(self.account, "product_offer/count"))

    def iter_pages(
        self,
        filters: Mapping[str, Any] | None = None,
        *,
        items_per_page: int = MAX_ITEMS_PER_PAGE,
        start_page: int = 1,
        stop_page: int | None = None,
        count: CatalogueCount | None = None,
    ) -> Generator[Page, None, None]:
        """Pages of ``product_offer/read`` in order, from ``start_page`` until a short or empty page (or
        ``stop_page``, when only the start of the catalogue is wanted).

        Calls ``count`` first (unless the caller just did and passes it, saving a request of the
        account's budget) and never asks beyond its pages plus one; a full page there raises
        ``EmagPagingError`` (see ``PagePlan``). Up to ``look_ahead`` requests overlap, paced by the limiter;
        at most that many pages wait in memory. The first failing page (in page order) raises after every
        page before it was yielded; closing the iterator drops the requests still queued.
        """
        check_items_per_page(items_per_page)
        if start_page < 1:
            raise ValueError(f"start_page must be >= 1, got {start_page}")
        return self._pages(dict(filters or {}), items_per_page, start_page, stop_page, count)

    def _pages(
        self,
        filters: dict[str, Any],
        items_per_page: int,
        start_page: int,
        stop_page: int | None,
        count: CatalogueCount | None,
    ) -> Generator[Page, None, None]:
        total = count if count is not None else self.count(filters)
        plan = PagePlan(
            items_per_page=items_per_page,
            start_page=start_page,
            expected_items=total.items,
            stop_page=stop_page,
        )
        logger.debug(
            "%s: %d offers announced, reading from page %d", self.account.title, total.items, start_page
        )
        cancel = threading.Event()
        pool = ThreadPoolExecutor(
            max_workers=self._look_ahead, thread_name_prefix=f"emag-{self.account.name}"
        )
        pending: deque[tuple[int, Future[tuple[list[dict[str, Any]], datetime]]]] = deque()
        next_page = start_page
        full_through = start_page - 1

        def top_up() -> None:
            nonlocal next_page
            while len(pending) < self._look_ahead and plan.may_request(
                next_page, all_full_through=full_through
            ):
                # Each request runs in the caller's context (a copy each): its log lines belong to the
                # caller's run (Prefect's run context is a context variable).
                context = contextvars.copy_context()
                future = pool.submit(context.run, self._read_page, filters, next_page, items_per_page, cancel)
                pending.append((next_page, future))
                next_page += 1

        try:
            top_up()
            while pending:
                number, future = pending.popleft()
                records, read_at = future.result()
                try:
                    last = plan.is_last(number, len(records))
                except PagingOverrun as exc:
                    site = CallSite(self.account, "product_offer/read", number)
                    raise site.error(EmagPagingError, str(exc)) from None
                if not last:
                    full_through = number
                    top_up()
                yield Page(number=number, records=records, read_at=read_at)
                if last:
                    return
        finally:
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _read_page(
        self, filters: dict[str, Any], number: int, items_per_page: int, cancel: threading.Event
    ) -> tuple[list[dict[str, Any]], datetime]:
        data = {**filters, "currentPage": number, "itemsPerPage": items_per_page}
        envelope = self._send("product_offer", "read", data, page=number, cancel=cancel)
        site = CallSite(self.account, "product_offer/read", number)
        records = self._records(envelope.results, site)
        check_filtered(records, filters, site)
        return records, _sent_at(envelope)

    @staticmethod
    def _records(results: Any, site: CallSite) -> list[dict[str, Any]]:
        # Only a page that is not a list is unreadable as a whole. A record in it that is not an object (an
        # UnreadableRecord among them: JSON Python could not parse) is the transform's to reject by name:
        # failing the page for it would stop every sync of the account.
        if not isinstance(results, list):
            raise site.error(
                EmagResponseFormatError, f"read results are not a list of records: {results!r:.200}"
            )
        return results

    def read_offer(self, emag_id: int) -> dict[str, Any] | None:
        """The current record of one offer by eMAG id (``product_offer/read`` filtered by id), or None."""
        page = self.read_by_id(emag_id)
        return page.records[0] if page.records else None

    def read_by_id(self, emag_id: int) -> Page:
        """One offer read by eMAG id, as a page of its own (number BY_ID): its record, or none when eMAG
        does not have it. An answer holding any other record raises ``EmagFilterIgnoredError``."""
        data = {"id": emag_id, "currentPage": 1, "itemsPerPage": MAX_ITEMS_PER_PAGE}
        envelope = self._send("product_offer", "read", data, subject=f"offer id {emag_id}")
        site = CallSite(self.account, "product_offer/read", subject=f"offer id {emag_id}")
        records = self._records(envelope.results, site)
        check_filtered(records, {"id": emag_id}, site)
        return Page(number=BY_ID, records=records[:1], read_at=_sent_at(envelope))

    # --- writes ------------------------------------------------------------------------------------------

    def save_offers(self, entities: Sequence[Mapping[str, Any]], *, subject: str = "") -> Envelope:
        """Update existing offers with the light offer API (``offer/save``): ONE request of at most 50.

        The caller chunks (see ``emag_sync.prices.apply``); ``subject`` names the chunk in errors. Entities
        are checked before anything is sent; a write that may have arrived is never resent.
        """
        if not 1 <= len(entities) <= MAX_ENTITIES_PER_SAVE:
            raise ValueError(f"offer/save takes 1 to {MAX_ENTITIES_PER_SAVE} entities, got {len(entities)}")
        ids = [_offer_id(entity, index) for index, entity in enumerate(entities)]
        subject = subject or f"offer ids {', '.join(map(str, ids))}"
        envelope = self._send("offer", "save", [dict(e) for e in entities], subject=subject, write=True)
        logger.debug("%s: offer/save of %d offers accepted", self.account.title, len(ids))
        return envelope

    # --- the one request path ----------------------------------------------------------------------------

    def _send(
        self,
        resource: str,
        action: str,
        data: Any,
        *,
        page: int | None = None,
        subject: str | None = None,
        write: bool = False,
        cancel: threading.Event | None = None,
    ) -> Envelope:
        site = CallSite(self.account, f"{resource}/{action}", page, subject)
        attempts = self.config.max_attempts
        for attempt in range(1, attempts + 1):
            sent = self._limiter.acquire()
            budget: Mapping[str, str] = {}
            try:
                if cancel is not None and cancel.is_set():
                    raise _Cancelled
                verdict, budget = self._attempt(site, data, sent)
            finally:
                self._limiter.answered(sent, budget)  # the one place eMAG's budget headers are read
            if verdict.envelope is not None:
                return verdict.envelope
            assert verdict.error is not None
            if (
                write
                and isinstance(verdict.error, EmagResponseFormatError)
                and verdict.status_code in range(200, 300)
            ):
                # eMAG (or a proxy) said 2xx but the body is unreadable: the save may well have been applied.
                raise site.error(
                    EmagUncertainWriteError,
                    f"the write was answered HTTP {verdict.status_code} but the answer cannot be read "
                    f"({verdict.reason}); it may have been applied: re-read these offers before trying again",
                    status_code=verdict.status_code,
                ) from verdict.error
            if not verdict.retriable:
                raise verdict.error
            if write and not verdict.not_processed:
                raise site.error(
                    EmagUncertainWriteError,
                    f"the write was sent but failed before eMAG confirmed it ({verdict.reason}); it may or may "
                    "not have been applied, so it is not resent: re-read these offers before trying again",
                    status_code=verdict.status_code,
                    messages=verdict.error.messages,
                ) from verdict.error
            if attempt == attempts:
                raise site.error(
                    EmagUnavailableError,
                    f"gave up after {attempts} attempts; last failure: {verdict.reason}",
                    status_code=verdict.status_code,
                    messages=verdict.error.messages,
                ) from verdict.error
            delay = self._backoff(attempt, verdict.retry_after)
            self.stats.record_retry()
            logger.warning(
                "%s: %s%s: %s; retry %d/%d in %.2f s",
                self.account.title,
                site.resource,
                f" page {page}" if page is not None else "",
                verdict.reason,
                attempt,
                attempts - 1,
                delay,
            )
            self._pause(delay, cancel)
        raise AssertionError("unreachable: the loop returns or raises")

    def _attempt(self, site: CallSite, data: Any, sent: float) -> tuple[Verdict, Mapping[str, str]]:
        """One request (let go by the limiter at ``sent``): its verdict, and the answer's headers (none when
        no answer came)."""
        started = time.monotonic()
        sent_at = datetime.now(UTC)
        try:
            with request_deadline(self.config.timeout_seconds):
                response = self._http.post(site.resource, json={"data": data}, extensions={SENT: sent})
        except httpx.TransportError as exc:
            self.stats.record(type(exc).__name__)
            verdict = classify(exc, site)
            logger.debug(
                "%s: %s failed after %.2f s: %s",
                self.account.title,
                site.resource,
                _since(started),
                verdict.reason,
            )
            return verdict, {}
        self.stats.record(str(response.status_code))
        logger.debug(
            "%s: %s%s: HTTP %d in %.2f s",
            self.account.title,
            site.resource,
            f" page {site.page}" if site.page is not None else "",
            response.status_code,
            _since(started),
        )
        verdict = classify(response, site)
        if verdict.envelope is not None:
            verdict = replace(verdict, envelope=replace(verdict.envelope, sent_at=sent_at))
        return verdict, response.headers

    def _leaving(self, request: httpx.Request) -> None:
        """Tell the limiter when the request really leaves: a thread held up after its slot (a busy process
        keeps it from the GIL) would otherwise share eMAG's window with the next requests on time."""
        sent = request.extensions.get(SENT)
        if sent is not None:
            self._limiter.went(sent)

    def _pause(self, delay: float, cancel: threading.Event | None) -> None:
        """Wait out a backoff; a look-ahead read wakes early (and drops out) when its read has ended."""
        if self._sleep is not None:
            self._sleep(delay)
        elif cancel is None:
            time.sleep(delay)
        elif cancel.wait(delay):
            raise _Cancelled

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when eMAG sends one, else exponential backoff with jitter (half fixed, half random)."""
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP_SECONDS)
        ceiling = min(self.config.max_backoff_seconds, self.config.backoff_seconds * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._jitter())


# The filters that name one record: every record a read filtered by one of them returns must carry its value.
IDENTITY_FILTERS = ("id", "part_number", "part_number_key")


def check_filtered(records: Sequence[object], filters: Mapping[str, Any], site: CallSite) -> None:
    """Refuse an answer to a filtered read that holds a record the filter does not match.

    eMAG ignores a filter it does not understand (public integrations saw it placed under ``data`` on some
    platforms) and answers the unfiltered catalogue: taking its first page as "the offer's read" would
    confirm an unrelated record, or find the offer missing and deactivate it. A record whose field cannot be
    read (not an object, unparsable) does not match either.
    """
    for name in IDENTITY_FILTERS:
        if name not in filters:
            continue
        wanted = str(filters[name])
        other = [value for value in (_field(record, name) for record in records) if value != wanted]
        if other:
            shown = ", ".join("unreadable" if value is None else value for value in other[:3])
            raise site.error(
                EmagFilterIgnoredError,
                f"filtered by {name} {wanted}, eMAG answered {len(records)} records, {len(other)} with another "
                f"{name} ({shown}{', ...' if len(other) > 3 else ''}): it did not apply the filter, so nothing is "
                "taken from this answer",
            )


def _field(record: object, name: str) -> str | None:
    """A record's ``id`` / ``part_number`` / ``part_number_key`` as text, None when it cannot be read."""
    if isinstance(record, UnreadableRecord):
        value = {"id": record.emag_id, "part_number": record.part_number}.get(name)
    elif isinstance(record, Mapping):
        value = record.get(name)
    else:
        return None
    return None if value is None or isinstance(value, (dict, list, bool)) else str(value)


def _sent_at(envelope: Envelope) -> datetime:
    assert envelope.sent_at is not None  # every envelope of _send comes from _attempt, which stamps it
    return envelope.sent_at


def _since(started: float) -> float:
    return time.monotonic() - started


def _offer_id(entity: Mapping[str, Any], index: int) -> int:
    """The offer's eMAG id, checked before anything is sent."""
    value = entity.get("id") if isinstance(entity, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_OFFER_ID <= value <= MAX_OFFER_ID:
        raise ValueError(
            f"offer #{index}: 'id' must be an integer between {MIN_OFFER_ID} and {MAX_OFFER_ID}, got {value!r}"
        )
    return value
