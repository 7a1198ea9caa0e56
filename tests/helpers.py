"""Assertions shared by the end-to-end and fault tests: the database against the sandbox's catalogue."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import httpx
from sqlalchemy import Connection, Engine, create_engine, event, func, select, text
from sqlalchemy.engine import URL

from emag_sandbox.state import SandboxState
from emag_sync.accounts import AccountType
from emag_sync.schema import offers, products


def _active(engine: Engine, table, account: AccountType) -> dict[str, int]:
    query = select(table.c.sku, table.c.emag_offer_id if table is offers else table.c.emag_id).where(
        table.c.account == account.name, table.c.is_active
    )
    with engine.connect() as conn:
        return {sku: emag_id for sku, emag_id in conn.execute(query)}


def assert_matches_catalogue(
    engine: Engine,
    state: SandboxState,
    account: AccountType,
    expected: Mapping[str, int] | None = None,
) -> None:
    """The database holds exactly the sandbox's catalogue for the account: no loss, no duplicate.

    ``expected`` (SKU -> eMAG id) replaces the catalogue when a test knows some records cannot load.
    """
    if expected is None:
        expected = {r["part_number"]: r["id"] for r in state.catalogue_records(account)}
    assert _active(engine, products, account) == dict(expected)
    assert _active(engine, offers, account) == dict(expected)


def assert_offers_point_at_their_products(engine: Engine) -> None:
    """Every product has exactly one offer and every offer its product: no half-written record."""
    joined = select(func.count()).select_from(
        products.join(offers, offers.c.product_id == products.c.id, full=True)
    )
    with engine.connect() as conn:
        orphans = conn.scalar(joined.where((offers.c.id.is_(None)) | (products.c.id.is_(None))))
        counts = (
            conn.scalar(select(func.count()).select_from(products)),
            conn.scalar(select(func.count()).select_from(offers)),
        )
    assert orphans == 0 and counts[0] == counts[1], f"products/offers {counts}, {orphans} without a pair"


# The offers upsert of a batch, which runs after its products upsert in the same transaction.
OFFERS_UPSERT = "INSERT INTO app.emag_product_offers_v2 AS t"


@contextmanager
def before_statement(
    engine: Engine, starts_with: str, action: Callable[[Connection], None]
) -> Iterator[None]:
    """Call ``action(connection)`` just before each statement of ``engine`` that starts with ``starts_with``
    (an SQLAlchemy engine event): a fault placed between two statements of one transaction."""

    def listener(conn: Connection, cursor, statement: str, parameters, context, executemany) -> None:
        if statement.lstrip().startswith(starts_with):
            action(conn)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def pages_in_order(state: SandboxState, account: AccountType) -> list[int]:
    """The catalogue pages the sandbox answered for ``account``, in the order they arrived."""
    return [
        r.page
        for r in state.request_log
        if r.account == str(account) and r.action == "read" and r.status_code == 200 and r.page is not None
    ]


def assert_resumed_after(reads: list[int], page: int) -> None:
    """A resumed attempt reads the pages after ``page`` first, then pages 1..``page`` once more (eMAG's
    paging has no snapshot: what changed there while the run was down must be seen)."""
    head, tail = reads[: len(reads) - page], reads[len(reads) - page :]
    assert head and min(head) == page + 1, reads
    assert sorted(tail) == list(range(1, page + 1)), reads


def rendered_markdown(markdown: str) -> str:
    """``markdown`` as HTML the way a CommonMark renderer with GFM tables and raw HTML on (the Prefect
    UI's) renders it: what a person would see, tags included."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(markdown)


# The session's template database, schema in place (tests/conftest.py creates it).
SCHEMA_TEMPLATE = "emag_sync_template"


@contextmanager
def scratch_database(admin_url: URL, name: str, template: str = SCHEMA_TEMPLATE) -> Iterator[URL]:
    """A database ``name`` copied from ``template`` (default: the schema template; ``template0``: an empty
    database), dropped (connections closed) afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class FilterIgnoringTransport(httpx.BaseTransport):
    """eMAG ignoring the filters of a read (as public integrations saw it do with a filter it did not
    understand): ``product_offer/read`` and ``count`` requests reach ``inner`` (the real sandbox) without
    their ``id``, ``part_number`` and ``part_number_key``, so they answer the unfiltered catalogue."""

    IGNORED = ("id", "part_number", "part_number_key")

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(("/product_offer/read", "/product_offer/count")):
            body = json.loads(request.content)
            body["data"] = {k: v for k, v in body["data"].items() if k not in self.IGNORED}
            request = httpx.Request(
                request.method, request.url, headers=request.headers, content=json.dumps(body).encode()
            )
            request.headers["content-length"] = str(len(request.content))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def drain_events() -> None:
    """Stop this process's events worker while the server it sends to still runs. Prefect keys the worker by
    client type, not by URL: left running, it would carry later tests' events (task runs' states among them)
    to a server a test pointed this process at, and that server may be gone."""
    import inspect

    from prefect.events.worker import EventsWorker
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    run_coro_as_sync(drain())
