"""Offer updates (prices and stock) validated against eMAG's current values, then sent in chunks of 50:
each chunk's intent committed before its request, its outcome after, its offers locked against a
concurrent update meanwhile; refused or lost saves re-read; interrupted updates of dead runs reconciled
first. One machinery for both kinds: what differs is the plan (``OfferChange``) and the audit's columns."""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, Protocol, Self, TypeVar

from sqlalchemy import Engine, RowMapping, select, tuple_
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from emag_sync.accounts import Account
from emag_sync.api.responses import Envelope
from emag_sync.errors import (
    EmagApiError,
    EmagBusinessError,
    EmagUnavailableError,
    EmagUncertainWriteError,
    PriceUpdateError,
)
from emag_sync.limits import MAX_ENTITIES_PER_SAVE
from emag_sync.locks import offer_update_locks, price_run_lock
from emag_sync.prices.audit import (
    CHANGED_ON_EMAG,
    Answer,
    Kind,
    Outcome,
    Requester,
    Reread,
    Status,
    asked_values,
    classify_reread,
    derive_status,
    held_values,
    record_outcome,
    record_reread,
    write_intents,
    write_offer_values,
)
from emag_sync.prices.current import CurrentReader, read_current, read_current_records, with_current
from emag_sync.prices.reconcile import describe_reconciled, reconcile_interrupted
from emag_sync.prices.results import PriceUpdateResult
from emag_sync.prices.rules import (
    PlannedUpdate,
    PriceRequest,
    StoredOffer,
    check_published,
    plan_update,
)
from emag_sync.prices.stock import (
    PlannedStock,
    StockRequest,
    check_main,
    check_mass_zero,
    check_stock_target,
    plan_stock,
)
from emag_sync.schema import offers
from emag_sync.settings import DEFAULT_MAX_PRICE_CHANGE, DEFAULT_MAX_ZERO_STOCK_SHARE, Settings

log = logging.getLogger(__name__)

# (sku, account) pairs per offer lookup query: far below where PostgreSQL's planner runs out of stack.
LOOKUP_BATCH = 1000


class OfferWriter(CurrentReader, Protocol):
    """What an update needs from emag_sync.api.EmagClient (one account, shared rate limiter)."""

    def save_offers(self, entities: Sequence[Mapping[str, Any]], *, subject: str = "") -> Envelope: ...

    def read_offer(self, emag_id: int) -> dict[str, Any] | None: ...


class OfferChange(Protocol):
    """One validated update of one offer, ready to send: a price plan (rules.PlannedUpdate) or a stock
    plan (stock.PlannedStock). What the sender, the audit and the re-read need of it."""

    @property
    def kind(self) -> Kind: ...

    @property
    def request(self) -> PriceRequest | StockRequest: ...

    @property
    def offer(self) -> StoredOffer: ...

    @property
    def account(self) -> Account: ...

    @property
    def sku(self) -> str: ...

    @property
    def emag_offer_id(self) -> int: ...

    @property
    def warehouse_id(self) -> int | None: ...

    @property
    def before(self) -> dict[str, object]: ...

    @property
    def confirmed(self) -> dict[str, object]: ...

    def entity(self) -> dict[str, Any]: ...

    def intent_columns(self) -> dict[str, Any]: ...

    def describe(self, values: Mapping[str, object]) -> str: ...

    def result_fields(self) -> dict[str, Any]: ...

    def since(self, now: StoredOffer, at: datetime) -> Self: ...


P = TypeVar("P", bound=OfferChange)
Q = TypeVar("Q", PriceRequest, StockRequest)


def find_offers(
    engine: Engine, keys: Iterable[tuple[str, Account]]
) -> dict[tuple[str, Account], StoredOffer]:
    """The stored offers for these (SKU, account) pairs, LOOKUP_BATCH pairs per query.

    PostgreSQL plans a row-valued IN list as nested ORs: somewhere past 5,000 pairs it answers "stack depth
    limit exceeded", so a whole catalogue's file (100k rows) is looked up in bounded batches.
    """
    keys = list(keys)
    named = {account.name: account for _, account in keys}
    wanted = list(dict.fromkeys((sku, account.name) for sku, account in keys))
    rows: list[RowMapping] = []
    with engine.connect() as conn:
        for start in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[start : start + LOOKUP_BATCH]
            query = select(offers).where(tuple_(offers.c.sku, offers.c.account).in_(batch))
            rows += conn.execute(query).mappings().all()
    found = {}
    for row in rows:
        offer = StoredOffer(
            row_id=row["id"],
            sku=row["sku"],
            account=named[row["account"]],
            emag_offer_id=row["emag_offer_id"],
            sale_price=row["sale_price"],
            min_sale_price=row["min_sale_price"],
            max_sale_price=row["max_sale_price"],
            recommended_price=row["recommended_price"],
            currency=row["currency"],
            vat_id=row["vat_id"],
            status=row["status"],
            is_active=row["is_active"],
            prices_pushed_at=row["prices_pushed_at"],
            stock=row["stock"],
            stock_pushed_at=row["stock_pushed_at"],
        )
        found[(offer.sku, offer.account)] = offer
    return found


def prepare_updates(
    engine: Engine,
    requests: Sequence[PriceRequest],
    reader: CurrentReader,
    *,
    max_change: Decimal = DEFAULT_MAX_PRICE_CHANGE,
) -> tuple[list[PlannedUpdate], list[PriceUpdateResult]]:
    """Look every request's offer up, read what eMAG holds now, and validate against that: (ready to
    send, refused with a reason). One account's requests; PriceUpdateError when eMAG cannot be read."""
    published, refused = _looked_up(engine, requests, check_published)
    if not published:
        return [], refused
    held = read_current(reader, requests[0].account, [offer for _, offer in published])
    planned: list[PlannedUpdate] = []
    for request, offer in published:
        current = with_current(offer, held)
        try:
            planned.append(plan_update(request, current, max_change=max_change))
        except PriceUpdateError as exc:
            refused.append(_refusal(request, current, exc))
    return planned, refused


def prepare_stock(
    engine: Engine, requests: Sequence[StockRequest], reader: Callable[[], CurrentReader]
) -> tuple[list[PlannedStock], list[PriceUpdateResult]]:
    """The stock requests' offers looked up and checked (a MAIN account's, active, published), eMAG's
    current stock read and the warehouse validated against it: (ready to send, refused with a reason).
    One account's requests; ``reader`` is opened only when something is left to read (never for FBE)."""
    published, refused = _looked_up(engine, requests, check_stock_target)
    if not published:
        return [], refused
    records = read_current_records(
        reader(), requests[0].account, [offer for _, offer in published], what="stock"
    )
    planned: list[PlannedStock] = []
    for request, offer in published:
        assert offer.emag_offer_id is not None  # check_published refuses offers without one
        try:
            planned.append(plan_stock(request, offer, records[offer.emag_offer_id]))
        except PriceUpdateError as exc:
            refused.append(_refusal(request, offer, exc))
    return planned, refused


def _looked_up(
    engine: Engine, requests: Sequence[Q], check: Callable[[Q, StoredOffer | None], StoredOffer]
) -> tuple[list[tuple[Q, StoredOffer]], list[PriceUpdateResult]]:
    """Each request's offer row, passed through ``check``: (request and offer to go on with, refused)."""
    stored = find_offers(engine, [(r.sku, r.account) for r in requests])
    published: list[tuple[Q, StoredOffer]] = []
    refused: list[PriceUpdateResult] = []
    for request in requests:
        offer = stored.get((request.sku, request.account))
        try:
            published.append((request, check(request, offer)))
        except PriceUpdateError as exc:
            refused.append(_refusal(request, offer, exc))
    return published, refused


def _refusal(
    request: PriceRequest | StockRequest, offer: StoredOffer | None, exc: PriceUpdateError
) -> PriceUpdateResult:
    fields: dict[str, Any] = (
        {"new_stock": request.stock}
        if isinstance(request, StockRequest)
        else {
            "old_price": offer.sale_price if offer else None,
            "new_price": request.price,
            "currency": offer.currency if offer else None,
        }
    )
    return PriceUpdateResult(
        request,
        "invalid",
        exc.detail,
        emag_offer_id=offer.emag_offer_id if offer else None,
        fix=exc.fix,
        **fields,
    )


def apply_updates(
    engine: Engine,
    writer: OfferWriter,
    plans: Sequence[P],
    who: Requester,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[PriceUpdateResult]:
    """Send one account's validated updates (one kind) in chunks of at most 50.

    Per chunk, holding its offers' update locks (another run's update of one of them waits, so eMAG and
    the database take them in the same order): the intent rows ('sending') are committed, the request is
    sent, then the outcome and the offer rows are written in one transaction. ``isError`` re-reads the
    chunk's offers, because eMAG may have saved part of it; a lost answer (EmagUncertainWriteError)
    re-reads too. Stock eMAG accepted is re-read as well, once after the last chunk (``_confirm``): the
    offer's totals (general and estimated stock) are eMAG's to compute, and an order may reserve units
    meanwhile. A process killed between the two transactions leaves the intent rows, which the next
    price or stock run, or a sync, reconciles.
    """
    if len({plan.account for plan in plans}) > 1:
        raise ValueError("apply_updates takes one account's updates; group them first")
    results: list[PriceUpdateResult] = []
    sent: list[OfferChange] = []  # the plans as sent (refreshed when another update went first)
    stop: str | None = None
    chunks = [
        plans[start : start + MAX_ENTITIES_PER_SAVE] for start in range(0, len(plans), MAX_ENTITIES_PER_SAVE)
    ]
    for number, chunk in enumerate(chunks, start=1):
        if stop is not None:
            results += [_result(p, "not-sent", f"not sent: {stop}") for p in chunk]
            sent += chunk
            continue
        subject = f"chunk {number}/{len(chunks)} (offer ids {', '.join(str(p.emag_offer_id) for p in chunk)})"
        with offer_update_locks(engine, chunk[0].account, [p.emag_offer_id for p in chunk]) as waited:
            if waited is not None:
                chunk = _pushed_meanwhile(engine, chunk, waited)
            done, stop = _send_chunk(engine, writer, chunk, who, subject, clock)
        results += done
        sent += chunk
    if plans and plans[0].kind == "stock":
        accepted = [(p, r) for p, r in zip(sent, results, strict=True) if r.answer == "accepted"]
        _confirm(engine, writer, accepted, clock)
    return results


def _confirm(
    engine: Engine,
    writer: OfferWriter,
    done: Sequence[tuple[OfferChange, PriceUpdateResult]],
    clock: Callable[[], datetime],
) -> None:
    """Read back what eMAG accepted (its pages, or by id, whichever costs fewer requests: 500 offers of a
    700-offer catalogue are 8 reads, not 500), and record on each audit row what the re-read found; the
    offer rows take what eMAG holds. A failed read leaves the rows as accepted, the re-read 'read failed'."""
    if not done:
        return
    plans = [plan for plan, _ in done]
    error = None
    try:
        records = read_current_records(writer, plans[0].account, [p.offer for p in plans], what=plans[0].kind)
    except PriceUpdateError as exc:
        records, error = {}, exc.detail
    at = clock()
    try:
        with engine.begin() as conn:
            for plan, result in done:
                record = records.get(plan.emag_offer_id)
                if record is None:
                    reread = Reread("read failed", at, "save", error=error)
                else:
                    held = held_values(plan.kind, record, plan.warehouse_id)
                    found = classify_reread(
                        plan.kind, asked_values(plan.kind, plan.entity()), plan.before, held
                    )
                    reread = Reread(found, at, "save", held)
                    write_offer_values(conn, plan.account, plan.sku, plan.kind, held, at)
                assert result.audit_id is not None  # accepted: its intent was written
                record_reread(conn, result.audit_id, reread)
                result.found = reread.found
                result.message = _message(plan, Outcome("accepted", "applied", at, reread=reread))
    except SQLAlchemyError as exc:  # the outcome is recorded already; only the re-read is lost
        log.warning("the re-read after the saves could not be recorded: %s", _reason(exc))


def _pushed_meanwhile(engine: Engine, chunk: Sequence[P], since: datetime) -> list[P]:
    """The chunk with the values another update confirmed while this one waited for its offers: they are
    what eMAG holds now, so the audit's old values and the re-read's comparison start from them."""
    stored = find_offers(engine, [(plan.sku, plan.account) for plan in chunk])
    fresh = []
    for plan in chunk:
        now = stored.get((plan.sku, plan.account))
        fresh.append(plan if now is None else plan.since(now, since))
    return fresh


def _send_chunk(
    engine: Engine,
    writer: OfferWriter,
    chunk: Sequence[OfferChange],
    who: Requester,
    subject: str,
    clock: Callable[[], datetime],
) -> tuple[list[PriceUpdateResult], str | None]:
    """One chunk's intent, request and outcome: its results, and why later chunks must not be sent."""
    try:
        audit_ids = write_intents(engine, [plan.intent_columns() for plan in chunk], who, clock())
    except SQLAlchemyError as exc:
        failed = f"the database could not record the intent ({_reason(exc)})"
        return [_result(p, "not-sent", f"not sent: {failed}") for p in chunk], failed
    stop: str | None = None
    outcomes: list[Outcome]
    try:
        writer.save_offers([plan.entity() for plan in chunk], subject=subject)
    except EmagBusinessError as exc:
        outcomes = _reread_chunk(writer, chunk, exc, "refused", clock)
    except EmagUncertainWriteError as exc:
        outcomes = _reread_chunk(writer, chunk, exc, "no-answer", clock)
    except EmagUnavailableError as exc:
        # Every attempt answered 429/503, which eMAG sends without acting: not applied, and not refused.
        stop = str(exc)
        outcomes = [Outcome("unavailable", "not-applied", clock(), [], str(exc)) for _ in chunk]
    except EmagApiError as exc:
        # Refused before eMAG could act (auth, other 4xx): later chunks would fail alike.
        stop = str(exc)
        outcomes = [Outcome("refused", "refused", clock(), [str(exc)], str(exc)) for _ in chunk]
    else:
        outcomes = [Outcome("accepted", "applied", clock()) for _ in chunk]
    try:
        return _record(engine, chunk, audit_ids, outcomes), stop
    except SQLAlchemyError as exc:
        # eMAG may hold the new values; the database could not take the outcome. The intent rows stay
        # 'sending' for the next run or sync to reconcile; send nothing more that could not be recorded.
        reason = _reason(exc)
        log.error("offer updates sent to eMAG but their outcome not recorded: %s", reason)
        return [
            _result(
                plan,
                "uncertain",
                f"sent to eMAG (its answer: {outcome.answer}), but the outcome could not be written "
                f"({reason}); audit row {audit_id} stays 'sending' until the next {plan.kind} run or sync "
                f"of {plan.account.name} reconciles it",
                audit_id,
                outcome,
            )
            for plan, audit_id, outcome in zip(chunk, audit_ids, outcomes, strict=True)
        ], f"the database failed after an earlier chunk was sent ({reason})"


def _record(
    engine: Engine, chunk: Sequence[OfferChange], audit_ids: Sequence[int], outcomes: Sequence[Outcome]
) -> list[PriceUpdateResult]:
    """The chunk's outcome rows and offer rows, in one transaction."""
    results = []
    with engine.begin() as conn:
        for plan, audit_id, outcome in zip(chunk, audit_ids, outcomes, strict=True):
            record_outcome(conn, audit_id, outcome)
            reread = outcome.reread
            if (
                reread is not None
                and reread.values is not None
                and reread.found != "not found"
                and (outcome.answer == "accepted" or reread.found in CHANGED_ON_EMAG)
            ):
                assert reread.at is not None
                write_offer_values(conn, plan.account, plan.sku, plan.kind, reread.values, reread.at)
            elif outcome.answer == "accepted":
                assert outcome.answered_at is not None
                write_offer_values(
                    conn, plan.account, plan.sku, plan.kind, plan.confirmed, outcome.answered_at
                )
            results.append(_result(plan, outcome.status, _message(plan, outcome), audit_id, outcome))
    return results


def _reread_chunk(
    writer: OfferWriter,
    chunk: Sequence[OfferChange],
    error: EmagApiError,
    answer: Answer,
    clock: Callable[[], datetime],
) -> list[Outcome]:
    """Read back every offer of a chunk whose save was refused or lost: eMAG's answer beside what it holds."""
    answered_at = clock()
    outcomes = []
    for plan in chunk:
        try:
            record = writer.read_offer(plan.emag_offer_id)
        except EmagApiError as exc:
            reread = Reread("read failed", clock(), "save", error=str(exc))
        else:
            held = None if record is None else held_values(plan.kind, record, plan.warehouse_id)
            found = classify_reread(plan.kind, asked_values(plan.kind, plan.entity()), plan.before, held)
            reread = Reread(found, clock(), "save", held)
        messages = _messages_for(error, plan.emag_offer_id) if answer == "refused" else []
        outcomes.append(
            Outcome(
                answer,
                derive_status(answer, reread.found),
                answered_at if answer == "refused" else None,
                messages,
                str(error),
                reread,
            )
        )
    return outcomes


def _messages_for(error: EmagApiError, emag_offer_id: int) -> list[str]:
    """eMAG's messages naming this offer, else all of them (a refusal of the whole request)."""
    messages = [str(m) for m in error.messages]
    return [m for m in messages if str(emag_offer_id) in m] or messages or [str(error)]


def _message(plan: OfferChange, outcome: Outcome) -> str:
    """What the operator reads about one outcome: eMAG's answer, then what the re-read found."""
    noun = "prices" if plan.kind == "price" else "stock"
    if outcome.answer == "accepted":
        reread = outcome.reread
        if reread is None or reread.found.startswith(("new ", "same ")):
            return "applied on eMAG and in the database"
        if reread.found == "read failed":
            return f"applied on eMAG and in the database; re-reading it failed ({reread.error})"
        return f"applied on eMAG; the re-read shows {plan.describe(reread.values or {})}, which the database took"
    if outcome.answer == "unavailable":
        return f"eMAG was unavailable, so nothing was changed ({outcome.error}); send it again later"
    said = (
        f"eMAG refused: {'; '.join(outcome.messages)}"
        if outcome.answer == "refused"
        else f"the answer was lost ({outcome.error})"
    )
    reread = outcome.reread
    if reread is None:
        return said
    if reread.found == "read failed":
        return f"{said}; re-reading the offer failed ({reread.error}): check it on eMAG, then sync"
    if reread.found == "not found":
        return f"{said}; eMAG did not return the offer when re-read: check it on eMAG, then sync"
    verdict = reread.found.split()[0]
    if outcome.status == "uncertain" and verdict == "old":
        return (
            f"{said}; the re-read still shows the old {noun}, but the save may land late: the next {plan.kind} "
            f"run or sync of {plan.account.name} settles it"
        )
    seen = {
        "new": f"the re-read shows the new {noun} on eMAG",
        "same": f"the re-read shows the asked-for {noun}, which eMAG held already",
        "old": "nothing changed (re-read)",
        "other": f"eMAG now holds {plan.describe(reread.values or {})}",
    }[verdict]
    return f"{said}; {seen}"


def _result(
    plan: OfferChange,
    status: Status,
    message: str,
    audit_id: int | None = None,
    outcome: Outcome | None = None,
) -> PriceUpdateResult:
    return PriceUpdateResult(
        plan.request,
        status,
        message,
        emag_offer_id=plan.emag_offer_id,
        audit_id=audit_id,
        answer=outcome.answer if outcome else None,
        found=outcome.reread.found if outcome and outcome.reread else None,
        **plan.result_fields(),
    )


def _reason(exc: SQLAlchemyError) -> str:
    return str(exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc).splitlines()[0]


def requested_by_os_user() -> str:
    """The operator's login name, for the audit row."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown-user"


@contextmanager
def emag_writers(settings: Settings) -> Iterator[Callable[[Account], OfferWriter]]:
    """One client per account, opened on first use on the account's shared rate budget (see open_client),
    so an offer update and a sync of the same account never exceed eMAG's 3 requests/s together."""
    from emag_sync.api import open_client  # imported when sending: validation alone needs no HTTP stack

    clients: dict[Account, OfferWriter] = {}
    with ExitStack() as stack:

        def writer_for(account: Account) -> OfferWriter:
            if account not in clients:
                clients[account] = stack.enter_context(open_client(settings, account))
            return clients[account]

        yield writer_for


@contextmanager
def sending_for(
    engine: Engine,
    account: Account,
    writer_for: Callable[[Account], OfferWriter],
    notify: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """An update run's hold on the account (prices or stock): interrupted updates of dead runs, of either
    kind, reconciled from eMAG first, then the account's update lock held shared while this run sends."""

    def reconcile() -> None:
        done = reconcile_interrupted(engine, lambda: writer_for(account), account)
        if done and notify is not None:
            history = "price-history" if all(r.kind == "price" for r in done) else "offer-history"
            notify(f"{account.label}: {describe_reconciled(done)} (emag-sync {history} shows them)")

    with price_run_lock(engine, account, reconcile):
        yield


def run_single(
    engine: Engine,
    request: PriceRequest,
    writer_for: Callable[[Account], OfferWriter],
    who: Requester,
    *,
    max_change: Decimal = DEFAULT_MAX_PRICE_CHANGE,
    show: Callable[[PlannedUpdate], None] | None = None,
    notify: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> PriceUpdateResult | None:
    """Reconcile, look up, read eMAG's current values, show, validate and send one update;
    PriceUpdateError before anything is sent.

    Returns None on a dry run (read, shown and validated; nothing sent, nothing reconciled).
    """
    if dry_run:
        _plan_single(engine, request, writer_for(request.account), max_change, show)
        return None
    with sending_for(engine, request.account, writer_for, notify):
        writer = writer_for(request.account)
        plan = _plan_single(engine, request, writer, max_change, show)
        [result] = apply_updates(engine, writer, [plan], who)
    return result


def _plan_single(
    engine: Engine,
    request: PriceRequest,
    reader: CurrentReader,
    max_change: Decimal,
    show: Callable[[PlannedUpdate], None] | None,
) -> PlannedUpdate:
    offer = find_offers(engine, [(request.sku, request.account)]).get((request.sku, request.account))
    offer = check_published(request, offer)
    offer = with_current(offer, read_current(reader, request.account, [offer]))
    if show is not None:  # shown before validation, so a refused price is seen next to the current range
        show(PlannedUpdate(request, offer))
    return plan_update(request, offer, max_change=max_change)


def run_bulk(
    engine: Engine,
    requests: Sequence[PriceRequest],
    writer_for: Callable[[Account], OfferWriter],
    who: Requester,
    *,
    max_change: Decimal = DEFAULT_MAX_PRICE_CHANGE,
    notify: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> list[PriceUpdateResult]:
    """Validate every request against what eMAG holds now (every account before anything is sent), then
    per account reconcile and send the valid ones; results in input order.

    On a dry run the valid ones come back as 'not-sent' after validation. PriceUpdateError, with nothing
    sent, when eMAG's current values cannot be read.
    """
    results: list[PriceUpdateResult] = []
    ready: dict[Account, list[PlannedUpdate]] = {}
    for account in dict.fromkeys(request.account for request in requests):
        mine = [request for request in requests if request.account == account]
        if mine:
            ready[account], refused = prepare_updates(
                engine, mine, writer_for(account), max_change=max_change
            )
            results += refused
    for account, planned in ready.items():
        if dry_run:
            results += [_result(p, "not-sent", "valid (dry run, not sent)") for p in planned]
            continue
        with sending_for(engine, account, writer_for, notify):
            if planned:
                results += apply_updates(engine, writer_for(account), planned, who)
    order = {id(request): i for i, request in enumerate(requests)}
    return sorted(results, key=lambda r: order[id(r.request)])


# --- stock ---------------------------------------------------------------------------------------


def run_stock_single(
    engine: Engine,
    request: StockRequest,
    writer_for: Callable[[Account], OfferWriter],
    who: Requester,
    *,
    notify: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> PriceUpdateResult | None:
    """Check, reconcile, read eMAG's current stock, validate and send one stock; PriceUpdateError (a
    StockUpdateError) before anything is sent, and before eMAG is called for an FBE account.

    Returns None on a dry run (read and validated; nothing sent, nothing reconciled).
    """
    check_main(request)
    if dry_run:
        _plan_stock_single(engine, request, writer_for(request.account))
        return None
    with sending_for(engine, request.account, writer_for, notify):
        writer = writer_for(request.account)
        plan = _plan_stock_single(engine, request, writer)
        [result] = apply_updates(engine, writer, [plan], who)
    return result


def _plan_stock_single(engine: Engine, request: StockRequest, reader: CurrentReader) -> PlannedStock:
    offer = find_offers(engine, [(request.sku, request.account)]).get((request.sku, request.account))
    offer = check_stock_target(request, offer)
    assert offer.emag_offer_id is not None  # check_published refuses offers without one
    record = read_current_records(reader, request.account, [offer], what="stock")[offer.emag_offer_id]
    return plan_stock(request, offer, record)


def run_stock_bulk(
    engine: Engine,
    requests: Sequence[StockRequest],
    writer_for: Callable[[Account], OfferWriter],
    who: Requester,
    *,
    max_zero_share: Decimal = DEFAULT_MAX_ZERO_STOCK_SHARE,
    allow_mass_zero: bool = False,
    notify: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> list[PriceUpdateResult]:
    """The mass-zero guard first (MassZeroStockError, nothing read or sent), then every request validated
    (every account before anything is sent), then per account reconcile and send the valid ones in chunks
    of 50 light offer/save entities; results in input order. Invalid rows are refused by name, the rest
    applied. On a dry run the valid ones come back as 'not-sent' after validation."""
    zeroing = check_mass_zero(engine, requests, max_share=max_zero_share, allow=allow_mass_zero)
    results: list[PriceUpdateResult] = []
    ready: dict[Account, list[PlannedStock]] = {}
    for account in dict.fromkeys(request.account for request in requests):
        mine = [request for request in requests if request.account == account]
        ready[account], refused = prepare_stock(engine, mine, partial(writer_for, account))
        results += refused
        if account in zeroing:  # the audit says which zeros went past the guard
            ready[account] = [replace(p, mass_zero=p.request.stock == 0) for p in ready[account]]
    for account, planned in ready.items():
        if dry_run:
            results += [_result(p, "not-sent", "valid (dry run, not sent)") for p in planned]
            continue
        with sending_for(engine, account, writer_for, notify):
            if planned:
                results += apply_updates(engine, writer_for(account), planned, who)
    order = {id(request): i for i, request in enumerate(requests)}
    return sorted(results, key=lambda r: order[id(r.request)])
