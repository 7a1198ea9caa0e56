"""EmagClient: error classification by hand, then against the sandbox in-process and over a loopback port."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from emag_sandbox.app import create_app
from emag_sandbox.state import SandboxState
from emag_sync.accounts import AccountType, legacy_account
from emag_sync.api.client import EmagClient, RequestCounters
from emag_sync.api.deadline import environment_proxy
from emag_sync.api.paging import CatalogueCount
from emag_sync.api.ratelimit import SlidingWindowLimiter
from emag_sync.api.responses import CallSite, classify, parse_count, parse_retry_after, redact_headers
from emag_sync.api.salvage import UnreadableRecord
from emag_sync.errors import (
    EmagAuthError,
    EmagBusinessError,
    EmagFilterIgnoredError,
    EmagRequestError,
    EmagResponseFormatError,
    EmagUnavailableError,
    EmagUncertainWriteError,
)
from emag_sync.limits import MAX_ENTITIES_PER_SAVE
from emag_sync.settings import AccountConfig
from tests.helpers import FilterIgnoringTransport
from tests.trickle import TricklingServer

FBE = legacy_account(AccountType.FBE)
IN_PROCESS_URL = "http://sandbox.test/api-3"
SITE = CallSite(FBE, "product_offer/read", 3)


# --- classification, by hand ---------------------------------------------------------------------------


def _response(status: int, body: bytes | dict | None = None, headers: dict | None = None) -> httpx.Response:
    if isinstance(body, dict):
        return httpx.Response(status, json=body, headers=headers)
    return httpx.Response(status, content=body or b"", headers=headers)


def test_accepted_envelope() -> None:
    verdict = classify(_response(200, {"isError": False, "messages": [], "results": [{"id": 1}]}), SITE)
    assert verdict.envelope is not None and verdict.envelope.results == [{"id": 1}] and verdict.error is None


def test_is_error_is_fatal_with_emag_messages_account_resource_and_page() -> None:
    body = {"isError": True, "messages": ["Could not read page 3"], "results": []}
    verdict = classify(_response(200, body), SITE)
    assert isinstance(verdict.error, EmagBusinessError) and not verdict.retriable
    assert str(verdict.error) == (
        "fbe: product_offer/read page 3: eMAG answered isError: true (eMAG says: Could not read page 3)"
    )


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(401, EmagAuthError), (403, EmagAuthError), (400, EmagRequestError), (404, EmagRequestError)],
)
def test_client_errors_are_fatal(status: int, error_type: type) -> None:
    verdict = classify(_response(status, {"isError": True, "messages": ["nope"]}), SITE)
    assert isinstance(verdict.error, error_type) and not verdict.retriable
    assert verdict.error.status_code == status and verdict.error.messages == ["nope"]


@pytest.mark.parametrize(("status", "refused"), [(500, False), (502, False), (504, False), (503, True)])
def test_server_errors_are_retriable(status: int, refused: bool) -> None:
    verdict = classify(_response(status, b"<html>bad gateway</html>"), SITE)
    assert isinstance(verdict.error, EmagUnavailableError) and verdict.retriable
    assert verdict.not_processed is refused  # only 503 says eMAG did not act: a write may be resent
    assert "<html>bad gateway</html>" in str(verdict.error)


def test_emag_429_without_is_error_is_a_retriable_refusal() -> None:
    verdict = classify(_response(429, {"message": "API rate limit exceeded"}), SITE)
    assert verdict.retriable and verdict.not_processed and verdict.retry_after is None
    assert "API rate limit exceeded" in str(verdict.error)
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert classify(_response(429, b"", {"Retry-After": "7"}), SITE).retry_after == 7.0
    assert 25 < (classify(_response(429, b"", {"Retry-After": later}), SITE).retry_after or 0) <= 30
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("error", "before_sending"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ConnectTimeout("slow"), True),
        (httpx.PoolTimeout("busy"), True),
        (httpx.ReadTimeout("slow"), False),
        (httpx.RemoteProtocolError("gone"), False),
        (httpx.ReadError("reset"), False),
    ],
)
def test_transport_errors_are_retriable_and_know_if_anything_was_sent(
    error: httpx.TransportError, before_sending: bool
) -> None:
    verdict = classify(error, SITE)
    assert verdict.retriable and verdict.not_processed is before_sending
    assert type(error).__name__ in str(verdict.error)


def test_body_that_is_not_json_shows_its_first_bytes() -> None:
    body = b"<html>" + b"x" * 500
    verdict = classify(_response(200, body), SITE)
    assert isinstance(verdict.error, EmagResponseFormatError) and not verdict.retriable
    message = str(verdict.error)
    assert "not JSON" in message and "<html>xxx" in message and "x" * 201 not in message


def test_json_that_is_not_an_envelope_is_a_format_error() -> None:
    verdict = classify(_response(200, {"results": []}), SITE)
    assert isinstance(verdict.error, EmagResponseFormatError) and "isError" in str(verdict.error)


def test_count_strings_become_integers_and_bad_fields_are_named() -> None:
    count = parse_count({"noOfItems": "1274", "noOfPages": "13", "itemsPerPage": "100"}, SITE)
    assert (count.items, count.pages, count.items_per_page) == (1274, 13, 100)
    with pytest.raises(EmagResponseFormatError, match=r"noOfPages is not a whole number: '13\.5'"):
        parse_count({"noOfItems": "1274", "noOfPages": "13.5", "itemsPerPage": "100"}, SITE)
    with pytest.raises(EmagResponseFormatError, match="noOfItems"):
        parse_count({"noOfPages": "13", "itemsPerPage": "100"}, SITE)


def test_redacted_headers() -> None:
    headers = httpx.Headers({"Authorization": "Basic abc", "Accept": "application/json"})
    assert redact_headers(headers) == {"authorization": "[redacted]", "accept": "application/json"}


def test_retry_after_is_honoured() -> None:
    """eMAG documents no Retry-After and the sandbox sends none, so this one test uses httpx.MockTransport."""
    answers = iter(
        [
            httpx.Response(429, json={"message": "API rate limit exceeded"}, headers={"Retry-After": "7"}),
            httpx.Response(200, json={"isError": False, "messages": [], "results": {"noOfItems": "3",
                                      "noOfPages": "1", "itemsPerPage": "100"}}),
        ]
    )  # fmt: skip
    sleeps: list[float] = []
    config = _config(SandboxState(products=1), url="http://mock.test/api-3")
    transport = httpx.MockTransport(lambda request: next(answers))
    with EmagClient(config, transport=transport, limiter=_fast_limiter(), sleep=sleeps.append) as client:
        assert client.count().items == 3
    assert sleeps == [7.0]
    assert client.stats.counters() == RequestCounters(api_requests=2, rate_limited=1, retries=1)


# --- the sandbox, in-process ---------------------------------------------------------------------------


def _config(state: SandboxState, *, url: str = IN_PROCESS_URL, password: str | None = None, **knobs):
    username, real_password = state.credentials[FBE.name]
    knobs = {"backoff_seconds": 0.01, "max_backoff_seconds": 0.05, "max_attempts": 4} | knobs
    return AccountConfig(
        account=FBE, username=username, password=SecretStr(password or real_password), api_url=url, **knobs
    )


def _fast_limiter() -> SlidingWindowLimiter:
    return SlidingWindowLimiter(1000, 100_000)


@pytest.fixture
def state() -> SandboxState:
    return SandboxState(products=250, main_products=120, rate_limit=False)


@pytest.fixture
def transport(state: SandboxState) -> Iterator[httpx.BaseTransport]:
    """The sandbox app driven in-process through Starlette's TestClient transport (a real ASGI round trip)."""
    with TestClient(create_app(state)) as test_client:
        yield test_client._transport


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(state, transport, sleeps) -> Iterator[EmagClient]:
    with EmagClient(
        _config(state), transport=transport, limiter=_fast_limiter(), sleep=sleeps.append, jitter=lambda: 1.0
    ) as client:
        yield client


def _reads(state: SandboxState) -> list[int | None]:
    return [r.page for r in state.request_log if r.action == "read"]


def test_count_returns_integers(client: EmagClient) -> None:
    count = client.count()
    assert (count.items, count.pages, count.items_per_page) == (250, 3, 100)


def test_pages_come_in_order_and_stop_at_the_short_page(client: EmagClient, state: SandboxState) -> None:
    pages = list(client.iter_pages(items_per_page=30))
    assert [p.number for p in pages] == list(range(1, 10))
    assert [len(p.records) for p in pages] == [30] * 8 + [10]
    assert [r for p in pages for r in p.records] == state.catalogue_records(FBE)
    assert sorted(_reads(state)) == list(range(1, 10))  # nothing requested past the end


def test_exact_multiple_reads_one_empty_page_and_no_more(client: EmagClient, state: SandboxState) -> None:
    pages = list(client.iter_pages(items_per_page=50))
    assert [len(p.records) for p in pages] == [50] * 5 + [0]
    assert sorted(_reads(state)) == [1, 2, 3, 4, 5, 6]


def test_resume_from_a_later_page(client: EmagClient, state: SandboxState) -> None:
    pages = list(client.iter_pages(items_per_page=100, start_page=2))
    assert [(p.number, len(p.records)) for p in pages] == [(2, 100), (3, 50)]
    assert pages[0].records[0] == state.catalogue_records(FBE)[100]


def test_filters_are_sent_with_paging(client: EmagClient, state: SandboxState) -> None:
    wanted = state.catalogue_records(FBE)[5]["part_number"]
    pages = list(client.iter_pages({"part_number": wanted}))
    assert [[r["part_number"] for r in p.records] for p in pages] == [[wanted]]


def test_page_size_above_the_limit_is_refused_before_any_request(client, state) -> None:
    with pytest.raises(ValueError, match="between 1 and 100"):
        client.iter_pages(items_per_page=101)
    assert state.request_log == []


def test_business_error_on_a_page_is_fatal_after_the_pages_before_it(client, state) -> None:
    state.set_faults(FBE, error_pages={2})
    seen = []
    with pytest.raises(EmagBusinessError) as info:
        for page in client.iter_pages(items_per_page=50):
            seen.append(page.number)
    assert seen == [1]
    assert info.value.page == 2 and info.value.account is FBE and info.value.resource == "product_offer/read"
    assert "Could not read page 2" in str(info.value)
    assert client.stats.counters().retries == 0 and _reads(state).count(2) == 1


def test_server_errors_are_retried_with_exponential_backoff(state, transport, sleeps) -> None:
    state.set_faults(FBE, error_rate=0.3)
    config = _config(state, max_attempts=10)  # 10 failures in a row at 30 % is practically impossible
    client = EmagClient(
        config, transport=transport, limiter=_fast_limiter(), sleep=sleeps.append, jitter=lambda: 1.0
    )
    with client:
        pages = list(client.iter_pages(items_per_page=25))
    assert sum(len(p.records) for p in pages) == 250
    stats = client.stats.counters()
    assert stats.retries > 0 and stats.retries == stats.api_requests - 12  # count + 11 reads succeeded
    assert any(status in client.stats.by_status for status in ("500", "502", "504"))
    assert set(sleeps) <= {0.01, 0.02, 0.04, 0.05}  # 0.01 doubling, capped at max_backoff_seconds


def test_forced_429s_back_off_and_are_counted(client, state, sleeps) -> None:
    state.set_faults(FBE, force_429=3)
    assert client.count().items == 250
    assert sleeps == [0.01, 0.02, 0.04]
    assert client.stats.counters() == RequestCounters(api_requests=4, rate_limited=3, retries=3)


def test_exhausted_retries_raise_unavailable_with_the_last_cause(client, state) -> None:
    state.set_faults(FBE, fail_from_request=0)
    with pytest.raises(
        EmagUnavailableError, match=r"gave up after 4 attempts; last failure: eMAG answered HTTP 50"
    ):
        client.count()
    assert len(state.request_log) == 4


def test_wrong_password_is_fatal_at_once(state, transport) -> None:
    config = _config(state, password="not-the-password")
    with (
        EmagClient(config, transport=transport, limiter=_fast_limiter()) as client,
        pytest.raises(EmagAuthError, match=r"fbe: product_offer/count: .*HTTP 401.*Invalid username"),
    ):
        client.count()
    assert len(state.request_log) == 1


class _WrongResource(httpx.BaseTransport):
    """Sends every request to a resource eMAG does not have (as a wrong API path would)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(
            path=request.url.path.replace("product_offer/count", "no_such/read")
        )
        return self._inner.handle_request(request)


def test_unknown_resource_is_a_fatal_request_error(state, transport) -> None:
    with (
        EmagClient(_config(state), transport=_WrongResource(transport), limiter=_fast_limiter()) as client,
        pytest.raises(EmagRequestError, match="HTTP 404"),
    ):
        client.count()
    assert len(state.request_log) == 1


def test_read_offer(client: EmagClient, state: SandboxState) -> None:
    emag_id = state.catalogue_records(FBE)[7]["id"]
    assert client.read_offer(emag_id) == state.record_by_id(
        FBE, emag_id
    )  # filtered reads differ (GPSR lists)
    assert client.read_offer(4_000_000_000) is None


def test_a_filtered_read_answered_with_other_records_fails_naming_the_account_and_filter(
    state, transport
) -> None:
    """eMAG ignores a filter it does not understand and answers the unfiltered catalogue. A read by id
    never takes a record from such an answer, even when the offer happens to be on its first page, and never
    reports the offer missing: it fails in one line naming the account and the filter. So does a paged
    read filtered by part_number."""
    records = state.catalogue_records(FBE)
    with EmagClient(
        _config(state), transport=FilterIgnoringTransport(transport), limiter=_fast_limiter()
    ) as client:
        for record in (records[0], records[150]):  # on the unfiltered first page, and beyond it
            with pytest.raises(EmagFilterIgnoredError) as failure:
                client.read_offer(record["id"])
            [line] = str(failure.value).splitlines()
            assert line.startswith(
                f"fbe: product_offer/read: offer id {record['id']}: filtered by id {record['id']}, eMAG answered "
                "100 records, "
            ), line
            assert "it did not apply the filter, so nothing is taken from this answer" in line
        with pytest.raises(EmagFilterIgnoredError, match=r"^fbe: product_offer/read page 1: filtered by "):
            list(
                client.iter_pages(
                    {"part_number": records[150]["part_number"]}, count=CatalogueCount(1, 1, 100)
                )
            )


def _repriced(record: dict, price: str) -> dict:
    return {
        "id": record["id"],
        "sale_price": price,
        "min_sale_price": "1.0000",
        "max_sale_price": "9999.0000",
    }


def test_a_save_is_one_request_of_at_most_fifty(client: EmagClient, state: SandboxState) -> None:
    records = state.catalogue_records(FBE)[:51]
    assert MAX_ENTITIES_PER_SAVE == 50
    for too_many in ([], [_repriced(r, "77.5000") for r in records]):
        with pytest.raises(ValueError, match="offer/save takes 1 to 50 entities"):
            client.save_offers(too_many)
    assert state.request_log == []  # refused before anything was sent
    envelope = client.save_offers([_repriced(r, "77.5000") for r in records[:50]])
    saves = [r for r in state.request_log if (r.resource, r.action) == ("offer", "save")]
    assert len(saves) == 1 and envelope.messages == []
    assert client.read_offer(records[49]["id"])["sale_price"] == "77.5000"


class _GarbledSaveAnswers(httpx.BaseTransport):
    """The real sandbox behind a proxy that garbles the 200 answer of every save (after eMAG applied it)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.url.path.endswith("/offer/save"):
            response.read()
            return httpx.Response(200, content=b"<html>Saved</html>")
        return response


def test_a_save_answered_2xx_with_an_unreadable_body_is_uncertain(state, transport) -> None:
    """The save arrived and was applied; the answer cannot be read: re-read, never 'not sent'."""
    record = state.catalogue_records(FBE)[0]
    with EmagClient(
        _config(state), transport=_GarbledSaveAnswers(transport), limiter=_fast_limiter()
    ) as client:
        with pytest.raises(EmagUncertainWriteError, match="HTTP 200 but the answer cannot be read"):
            client.save_offers([_repriced(record, "77.5000")])
        assert client.read_offer(record["id"])["sale_price"] == "77.5000"
    assert len([r for r in state.request_log if r.action == "save"]) == 1  # not resent


def test_a_refused_save_names_its_subject_and_emags_reason(client, state) -> None:
    records = state.catalogue_records(FBE)[:50]
    entities = [_repriced(r, "50.0000") for r in records]
    entities[10]["sale_price"] = "20000.0000"  # above max_sale_price: eMAG refuses the whole request
    with pytest.raises(EmagBusinessError) as info:
        client.save_offers(entities, subject="chunk 2/3")
    assert str(info.value).startswith("fbe: offer/save: chunk 2/3: eMAG answered isError: true")
    assert f"Offer id {records[10]['id']}: sale_price 20000.0000 is outside" in str(info.value)
    assert [r.action for r in state.request_log] == ["save"]
    without_subject = [_repriced(records[0], "20000.0000")]
    with pytest.raises(EmagBusinessError, match=f"offer/save: offer ids {records[0]['id']}: "):
        client.save_offers(without_subject)


def test_entities_without_a_valid_id_are_refused_before_sending(client, state) -> None:
    with pytest.raises(ValueError, match=r"offer #1: 'id' must be an integer"):
        client.save_offers([{"id": 5, "sale_price": "1"}, {"sale_price": "2"}])
    assert state.request_log == []


def test_closing_the_iterator_stops_the_look_ahead(state, transport) -> None:
    state.set_faults(FBE, latency_seconds=0.2)
    with EmagClient(_config(state), transport=transport, limiter=_fast_limiter(), look_ahead=3) as client:
        pages = client.iter_pages(items_per_page=10)
        first = next(pages)
        pages.close()
        sent = len(state.request_log)
        time.sleep(0.5)
    assert first.number == 1 and sent == len(state.request_log) <= 1 + 3 + 1  # count + look-ahead + 1


def test_closing_wakes_a_look_ahead_read_waiting_out_a_backoff(state, transport) -> None:
    state.set_faults(FBE, fail_from_request=3)  # count, page 1 and page 2 answer; then eMAG goes away
    config = _config(state, backoff_seconds=5.0, max_backoff_seconds=5.0)
    with EmagClient(config, transport=transport, limiter=_fast_limiter(), look_ahead=1) as client:
        pages = client.iter_pages(items_per_page=10)
        assert [next(pages).number, next(pages).number] == [1, 2]  # page 3 now failed, in a 5 s backoff
        time.sleep(0.1)
        started = time.monotonic()
        pages.close()
        assert time.monotonic() - started < 1.0
    assert len(state.request_log) == 4


def test_secrets_never_reach_errors_reprs_or_logs(state, transport, caplog) -> None:
    password = "S3cret-pa55word"
    username = state.credentials[FBE.name][0]
    state.credentials[FBE.name] = (username, password)
    tokens = [
        base64.b64encode(f"{username}:{secret}".encode()).decode() for secret in (password, "Wr0ng-pa55")
    ]
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="emag_sync")  # the project logger has its own level (INFO)
    texts = []
    config = _config(state, password=password)
    with EmagClient(config, transport=transport, limiter=_fast_limiter(), sleep=lambda s: None) as client:
        state.set_faults(FBE, fail_from_request=0)  # retries (logged at WARNING), then gives up
        with pytest.raises(EmagUnavailableError) as unavailable:
            client.count()
        state.set_faults(FBE, error_pages={1})
        with pytest.raises(EmagBusinessError) as business:
            list(client.iter_pages())
        texts += [repr(client), repr(config), str(client.__dict__)]
    wrong = _config(state, password="Wr0ng-pa55")
    with (
        EmagClient(wrong, transport=transport, limiter=_fast_limiter()) as client,
        pytest.raises(EmagAuthError) as auth,
    ):
        client.count()
    for info in (unavailable, business, auth):
        texts += [str(info.value), repr(info.value), str(info.value.__cause__)]
    text = " ".join([*texts, caplog.text])
    assert "[redacted]" in caplog.text and "retry 1/3" in caplog.text  # requests and retries were logged
    assert password not in text and "Wr0ng-pa55" not in text
    assert not any(token in text for token in tokens)
    assert repr(client) == f"EmagClient(account=FBE, api_url='{IN_PROCESS_URL}')"


# --- the sandbox over a loopback port ------------------------------------------------------------------


def test_timeouts_retry_reads_but_never_resend_a_write(sleeps, serve_sandbox) -> None:
    state = SandboxState(products=120, rate_limit=False)
    state.set_faults(FBE, latency_seconds=0.6)
    with serve_sandbox(state) as sandbox:
        config = _config(state, url=sandbox.url, timeout_seconds=0.2, max_attempts=2)
        with EmagClient(config, limiter=_fast_limiter(), sleep=sleeps.append) as client:
            with pytest.raises(
                EmagUnavailableError, match="gave up after 2 attempts; last failure: ReadTimeout"
            ):
                client.count()
            record = state.catalogue_records(FBE)[0]
            with pytest.raises(EmagUncertainWriteError, match="may or may not have been applied") as info:
                client.save_offers([_repriced(record, "12.0000")])
        time.sleep(0.7)  # let the sandbox finish answering before counting what it received
        log = list(state.request_log)
    assert [r.action for r in log] == ["count", "count", "save"]  # the write was sent exactly once
    assert f"offer ids {record['id']}" in str(info.value)


def test_unreachable_host_is_retried_even_for_writes_then_unavailable(sleeps, serve_sandbox) -> None:
    state = SandboxState(products=10)
    with serve_sandbox(state) as sandbox:
        url = sandbox.url
    config = _config(state, url=url, max_attempts=3)  # the port is closed now: nothing listens
    with (
        EmagClient(config, limiter=_fast_limiter(), sleep=sleeps.append) as client,
        pytest.raises(EmagUnavailableError, match="gave up after 3 attempts; last failure: ConnectError"),
    ):
        client.save_offers([{"id": 1, "sale_price": "5.0000"}])
    assert client.stats.by_status == {"ConnectError": 3} and len(sleeps) == 2


def test_overlapping_requests_sustain_the_rate_limit_without_a_429(serve_sandbox) -> None:
    """1 s responses at 3 requests/s: a sequential client would manage 1/s; overlap must reach >= 90%."""
    state = SandboxState(products=115, rate_limit=True, requests_per_second=3, per_minute=180)
    state.set_faults(FBE, latency_seconds=1.0)
    with serve_sandbox(state) as sandbox:
        config = _config(state, url=sandbox.url, requests_per_second=3, requests_per_minute=180)
        with EmagClient(config, limiter=SlidingWindowLimiter(3, 180)) as client:
            pages = list(client.iter_pages(items_per_page=10))
        log = list(state.request_log)
    assert [len(p.records) for p in pages] == [10] * 11 + [5]
    assert [r.status_code for r in log] == [200] * 13  # count + 12 pages, not one 429
    reads = sorted(r.at for r in log if r.action == "read")
    rate = (len(reads) - 1) / (reads[-1] - reads[0]).total_seconds()
    assert rate >= 0.9 * 3
    assert client.stats.counters().rate_limited == 0


# --- a whole request bounded by EMAG_TIMEOUT_SECONDS -------------------------------------------------------


@pytest.mark.timeout(30)  # unbounded, each attempt would take 100 s
@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_answer_ends_at_the_timeout_and_is_retried_like_a_timeout(where, state, sleeps) -> None:
    """Fault: the answer's bytes arrive one every 50 ms (never a pause the per-read timeout would catch),
    in the body or already in the status line and headers. Each attempt ends after the timeout."""
    with TricklingServer(where) as server:
        config = _config(state, url=server.url + "/api-3", timeout_seconds=0.5, max_attempts=2)
        started = time.monotonic()
        with (
            EmagClient(config, limiter=_fast_limiter(), sleep=sleeps.append) as client,
            pytest.raises(EmagUnavailableError) as info,
        ):
            client.count()
        elapsed = time.monotonic() - started
    assert str(info.value) == (
        "fbe: product_offer/count: gave up after 2 attempts; last failure: ReadTimeout: no complete answer "
        "within 0.5 s (EMAG_TIMEOUT_SECONDS bounds a whole request, from connect to the last byte)"
    )
    assert len(server.requests) == 2 and len(sleeps) == 1  # retried once, like any timeout
    assert 1.0 <= elapsed < 3.0


@pytest.mark.timeout(30)
def test_a_trickling_answer_to_a_write_is_uncertain_and_never_resent(state, sleeps) -> None:
    with TricklingServer("body") as server:
        config = _config(state, url=server.url + "/api-3", timeout_seconds=0.5, max_attempts=3)
        with (
            EmagClient(config, limiter=_fast_limiter(), sleep=sleeps.append) as client,
            pytest.raises(
                EmagUncertainWriteError,
                match=r"\(ReadTimeout: no complete answer within 0.5 s .*may or may not have been applied",
            ),
        ):
            client.save_offers([{"id": 200000001, "sale_price": "5.0000"}])
    assert len(server.requests) == 1 and sleeps == []


@pytest.mark.timeout(30)
def test_the_environment_proxy_is_used_and_bounded_too(state, sleeps, monkeypatch) -> None:
    """A client given its own transport no longer reads HTTP_PROXY itself: the deadline transport does."""
    with TricklingServer("body") as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        config = _config(state, url="http://emag.invalid/api-3", timeout_seconds=0.5, max_attempts=1)
        with (
            EmagClient(config, limiter=_fast_limiter(), sleep=sleeps.append) as client,
            pytest.raises(EmagUnavailableError, match="ReadTimeout: no complete answer within 0.5 s"),
        ):
            client.count()
    [(line, _)] = proxy.requests
    assert line == "POST http://emag.invalid/api-3/product_offer/count HTTP/1.1"


def test_environment_proxy_follows_the_proxy_variables(monkeypatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for spelling in (name, name.lower()):
            monkeypatch.delenv(spelling, raising=False)
    url = "https://marketplace-api.emag.ro/api-3"
    assert environment_proxy(url) is None
    monkeypatch.setenv("ALL_PROXY", "proxy.corp:3128")
    assert environment_proxy(url) == "http://proxy.corp:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://tls-proxy.corp:8080")
    assert environment_proxy(url) == "http://tls-proxy.corp:8080"
    monkeypatch.setenv("NO_PROXY", ".emag.ro")
    assert environment_proxy(url) is None


# --- pages Python cannot parse whole ---------------------------------------------------------------------


def _page(*records: str) -> bytes:
    return ('{"isError": false, "messages": [], "results": [' + ", ".join(records) + "]}").encode()


DEEP = "[" * 50_000 + "]" * 50_000


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"id": 7, "part_number": "D-1", "characteristics": ' + DEEP + "}",
         "characteristics is nested 50000 levels deep, more than Python's JSON parser reads"),
        ('{"id": 7, "part_number": "D-1", "warranty": ' + "9" * 5000 + "}",
         "warranty cannot be read: Exceeds the limit (4300 digits) for integer string conversion"),
        ('{"id": 7, "part_number": "D-1", "sale_price": NaN}', "sale_price cannot be read: NaN is not a JSON number"),
        ('{"id": 7, "part_number": "D-1", "name": "a" "b"}', "record cannot be read: Expecting"),
        (DEEP, "record cannot be read: nested deeper than Python's JSON parser reads"),
    ],
)  # fmt: skip
def test_a_record_python_cannot_parse_leaves_the_rest_of_the_page_readable(bad: str, reason: str) -> None:
    good = '{"id": 1, "part_number": "OK-1", "name": "\\u0000 and \\\\u0000 and \\ud800"}'
    verdict = classify(_response(200, _page(good, bad, good.replace("OK-1", "OK-2"))), SITE)
    assert verdict.envelope is not None, verdict.reason
    first, unreadable, last = verdict.envelope.results
    assert first == {"id": 1, "part_number": "OK-1", "name": "\x00 and \\u0000 and \ud800"}
    assert last["part_number"] == "OK-2"
    assert isinstance(unreadable, UnreadableRecord) and unreadable.text == bad
    assert unreadable.reason.startswith(reason), unreadable.reason
    expected_keys = (None, None) if bad == DEEP else (7, "D-1")
    assert (unreadable.emag_id, unreadable.part_number) == expected_keys


@pytest.mark.parametrize(
    "body",
    [b"<html>502</html>", _page('{"id": 1}')[:-5], b'{"isError": false, "results": [' + DEEP.encode(),
     b'{"isError": false, "messages": ' + DEEP.encode() + b', "results": []}'],
)  # fmt: skip
def test_an_answer_that_is_not_json_stays_unreadable_as_a_whole(body: bytes) -> None:
    verdict = classify(_response(200, body), SITE)
    assert isinstance(verdict.error, EmagResponseFormatError) and not verdict.retriable
    assert "the answer is not JSON" in verdict.reason


def test_an_unreadable_member_is_named_in_text_a_column_can_store() -> None:
    bad = '{"id": 7, "a\\u0000\\ud800": ' + DEEP + "}"
    verdict = classify(_response(200, _page(bad)), SITE)
    assert verdict.envelope is not None
    [unreadable] = verdict.envelope.results
    assert (
        unreadable.reason
        == "'a\\x00\\ud800' is nested 50000 levels deep, more than Python's JSON parser reads"
    )


def test_the_record_scanner_is_not_fooled_by_brackets_and_quotes_inside_strings() -> None:
    tricky = '{"id": 2, "name": "a]}\\"[{ \\\\", "list": [[1, {"k": "]"}], []], "n": -1.5e3, "t": true}'
    deep = '{"id": 3, "x": [' + "[" * 3000 + '"]]]"' + "]" * 3000 + "]}"
    verdict = classify(_response(200, _page(tricky, deep, tricky.replace('"id": 2', '"id": 4'))), SITE)
    assert verdict.envelope is not None
    first, unreadable, last = verdict.envelope.results
    assert first == json.loads(tricky) and last["id"] == 4
    assert unreadable.text == deep and unreadable.reason.startswith("x is nested 3001 levels deep")
