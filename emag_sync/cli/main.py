"""The ``emag-sync`` command line: sync, demo, runs, setup-prefect, serve, sandbox, docs, check; db and the
offer-update commands (update-price, update-stock, offer-history alias price-history) come from their
modules."""

from __future__ import annotations

import os
import sys
from datetime import timedelta

import typer
from sqlalchemy import Engine

from emag_sync.cli.accounts import accounts_app
from emag_sync.cli.alerts import DEFAULT_STUCK_AFTER
from emag_sync.cli.db import db_app
from emag_sync.cli.exit import fail
from emag_sync.cli.output import OutputFormat, format_option
from emag_sync.cli.prices import price_history, update_price
from emag_sync.cli.stock import update_stock
from emag_sync.errors import EmagSyncError
from emag_sync.limits import MAX_ITEMS_PER_PAGE
from emag_sync.options import SyncOptions
from emag_sync.settings import DATA_DOCS_PORT

app = typer.Typer(
    name="emag-sync",
    help="eMAG Marketplace products and offers into PostgreSQL, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


app.add_typer(db_app)
app.add_typer(accounts_app)


@app.callback()
def main() -> None:
    """emag-sync: sync eMAG MAIN and FBE catalogues into PostgreSQL and check what was loaded."""
    from emag_sync.cli.console import offline_prefect_defaults, say_schema_changes
    from emag_sync.cli.exit import check_settings

    offline_prefect_defaults()
    say_schema_changes()
    check_settings()


ACCOUNT_HELP = "registered account names, comma-separated (ro-main,bg-main), or all; both = main,fbe"
SELLER_HELP = "only the accounts of this seller (emag-sync accounts list shows them)"


@app.command()
def sync(
    account: str = typer.Option("both", "--account", "-a", help=ACCOUNT_HELP),
    seller: str | None = typer.Option(None, "--seller", help=SELLER_HELP),
    resume: bool = typer.Option(False, "--resume", help=SyncOptions.model_fields["resume"].description),
    pages_per_batch: int = typer.Option(
        SyncOptions.model_fields["pages_per_batch"].default,
        min=1,
        help=SyncOptions.model_fields["pages_per_batch"].description,
    ),
    items_per_page: int = typer.Option(
        SyncOptions.model_fields["items_per_page"].default,
        min=1,
        max=MAX_ITEMS_PER_PAGE,
        help=SyncOptions.model_fields["items_per_page"].description,
    ),
    wait_for_lock: bool = typer.Option(
        False, "--wait-for-lock", help=SyncOptions.model_fields["wait_for_lock"].description
    ),
    max_deactivated_share: float = typer.Option(
        SyncOptions.model_fields["max_deactivated_share"].default,
        min=0.0,
        max=1.0,
        help=SyncOptions.model_fields["max_deactivated_share"].description,
    ),
    max_deactivated_count: int | None = typer.Option(
        None, min=0, help=SyncOptions.model_fields["max_deactivated_count"].description
    ),
) -> None:
    """Run the emag-product-sync flow; exit 0 only on success."""
    from emag_sync.cli.console import terminal_owns_console

    terminal_owns_console()
    from emag_sync.cli.sync import run_sync
    from emag_sync.settings import get_settings

    options = SyncOptions(
        pages_per_batch=pages_per_batch,
        items_per_page=items_per_page,
        resume=resume,
        wait_for_lock=wait_for_lock,
        max_deactivated_share=max_deactivated_share,
        max_deactivated_count=max_deactivated_count,
    )
    try:
        outcome = run_sync(get_settings(), account, options, seller)
    except EmagSyncError as exc:
        fail(str(exc))
    if outcome.stopped_by is not None:
        raise typer.Exit(128 + outcome.stopped_by)  # the shell's convention for a command ended by a signal
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def demo(
    products: int = typer.Option(2550, min=1, help="FBE catalogue size in the sandbox (MAIN is smaller)"),
    no_rate_limit: bool = typer.Option(False, "--no-rate-limit", help="turn off the sandbox's 3 req/s"),
) -> None:
    """Sandbox + embedded PostgreSQL + the sync flow + the data-quality report; stops what it started."""
    from emag_sync.cli.console import terminal_owns_console

    terminal_owns_console()
    from emag_sync.cli.demo import run_demo

    try:
        outcome = run_demo(products=products, rate_limit=not no_rate_limit)
    except EmagSyncError as exc:
        fail(str(exc))
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def runs(
    limit: int = typer.Option(20, min=1, help="how many runs to show"),
    account: str | None = typer.Option(None, "--account", "-a", help="only this account's runs (its name)"),
    output: OutputFormat = format_option(),
) -> None:
    """Recent sync runs: status, counts, duration, 429s, data-quality outcome."""
    from sqlalchemy.exc import DBAPIError

    from emag_sync.cli.console import runs_listing
    from emag_sync.cli.output import show
    from emag_sync.db import database_error, engine_from_settings, first_line
    from emag_sync.registry import get_account, unknown_account
    from emag_sync.settings import get_settings

    try:
        engine = engine_from_settings(get_settings())
    except EmagSyncError as exc:
        fail(str(exc))
    try:
        which = None if account is None else account.strip().lower()
        if which is not None and get_account(engine, which) is None:
            fail(str(unknown_account(engine, which)))
        mark_dead_runs_crashed(engine)
        show([runs_listing(engine, limit=limit, account=which)], output)
    except DBAPIError as exc:
        fail(str(database_error(exc, engine.url) or f"the database does not answer: {first_line(exc)}"))
    finally:
        engine.dispose()


def mark_dead_runs_crashed(engine: Engine) -> None:
    """Runs left 'running' with nobody holding their account's lock died: mark them crashed. A role that
    may only read skips it with a note on stderr (they show as running)."""
    from sqlalchemy.exc import DBAPIError

    from emag_sync.db import INSUFFICIENT_PRIVILEGE, sqlstate
    from emag_sync.locks import is_locked
    from emag_sync.registry import list_accounts
    from emag_sync.runs import mark_crashed
    from emag_sync.schema import sync_runs

    for account in list_accounts(engine, include_removed=True):
        if is_locked(engine, account):
            continue
        try:
            mark_crashed(engine, account)
        except DBAPIError as exc:
            if sqlstate(exc) != INSUFFICIENT_PRIVILEGE:
                raise
            typer.echo(
                f"emag-sync: note: role {engine.url.username or '(default)'} may only read {sync_runs.fullname}, so runs whose process "
                "died are not marked crashed here (they show as running)",
                err=True,
            )
            return


# The offer-update commands live in emag_sync/cli/prices.py and stock.py; registered here to keep the help in this order.
app.command("update-price")(update_price)
app.command("update-stock")(update_stock)
app.command("offer-history")(price_history)
app.command("price-history", help="The same as offer-history (its earlier name).")(price_history)


@app.command("setup-prefect")
def setup_prefect(
    work_pool: str = typer.Option(
        "emag-sync-pool", "--work-pool", help="process work pool to create if missing"
    ),
    secrets: bool = typer.Option(
        True, "--secrets/--no-secrets", help="create Secret blocks from the environment"
    ),
    notify_webhook: str | None = typer.Option(
        None,
        "--notify-webhook",
        metavar="URL",
        help="send alerts as a JSON POST (subject, body) to this URL, through the block emag-sync-alerts",
    ),
    notify_block: str | None = typer.Option(
        None,
        "--notify-block",
        metavar="NAME",
        help="send alerts through this existing Prefect notification block (Slack, Teams, e-mail, ...)",
    ),
    silence_hours: float | None = typer.Option(
        None,
        "--silence-hours",
        min=0,
        help="alert when an account has not synced for this long "
        "[default: the interval of the schedule that syncs it plus the interval again, at most 2 h more]",
    ),
    stuck_minutes: float = typer.Option(
        DEFAULT_STUCK_AFTER.total_seconds() / 60,
        "--stuck-minutes",
        min=0,
        help="alert when a sync run is still running after this long",
    ),
) -> None:
    """Create or update, on the server at PREFECT_API_URL: the credentials' Secret blocks (from the
    environment), the work pool and, with --notify-webhook or --notify-block, the alerting automations;
    removes the per-account rate limits emag-api-* of earlier versions. Idempotent."""
    from emag_sync.cli.alerts import AlertOptions
    from emag_sync.cli.prefect_setup import setup_prefect as run_setup
    from emag_sync.settings import get_settings

    try:
        alerts = AlertOptions(
            notify_webhook=notify_webhook,
            notify_block=notify_block,
            silence=None if silence_hours is None else timedelta(hours=silence_hours),
            stuck_after=timedelta(minutes=stuck_minutes),
        )
        done = run_setup(get_settings(), work_pool=work_pool, secrets=secrets, alerts=alerts)
    except EmagSyncError as exc:
        fail(str(exc))
    for line in done:
        typer.echo(line)


@app.command()
def serve(
    deployments: list[str] = typer.Argument(None, help="deployment names from prefect.yaml (default: all)"),
) -> None:
    """Serve prefect.yaml's deployments from this process (flow.serve), with their schedules; no work pool."""
    from emag_sync.cli.serve import serve as serve_deployments

    try:
        serve_deployments(deployments or ())
    except EmagSyncError as exc:
        fail(str(exc))


@app.command()
def sandbox(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8765, min=0, max=65535, help="port; 0 picks a free one"),
    products: int = typer.Option(2550, min=0, help="FBE catalogue size"),
    main_products: int | None = typer.Option(None, min=0, help="MAIN catalogue size [default: 85% of FBE]"),
    seed: int = typer.Option(7, help="catalogue seed: same seed and sizes, same catalogues"),
    platform: str = typer.Option(
        "emag-ro", help="emag-ro, emag-bg, emag-hu, fd-ro or fd-bg (ro, bg, hu for short): its currency today"
    ),
    no_rate_limit: bool = typer.Option(False, "--no-rate-limit", help="turn off eMAG's per-account limit"),
    requests_per_second: float = typer.Option(3.0, min=0.01, help="per-account limit (eMAG: 3/s, 180/min)"),
    latency: float = typer.Option(0.0, min=0.0, help="seconds added to every answer"),
    error_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="share of requests answered 500/502/504"),
    malformed_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="share of records served malformed"),
    error_page: list[int] = typer.Option([], "--error-page", help="read page answering isError (repeat)"),
    force_429: int = typer.Option(0, "--force-429", min=0, help="first N requests answer 429"),
    fail_from_request: int | None = typer.Option(None, min=0, help="after N requests every call fails"),
    empty_catalogue: bool = typer.Option(
        False, "--empty-catalogue", help="count 0 and empty pages: an outage that looks like success"
    ),
    shift_after_page: int | None = typer.Option(
        None, min=1, help="after serving read page N, remove a record already read and add one at the end"
    ),
    hostile_records: str = typer.Option(
        "",
        help="records PostgreSQL or Python cannot store, and markup: comma-separated kinds or 'all' "
        "(nul, escaped_nul, lone_surrogate, big_integer, big_id, long_part_number, deep, long_number, nan, markup)",
    ),
    account: list[str] = typer.Option(
        [],
        "--account",
        help="NAME:PLATFORM:KIND[:PRODUCTS] (e.g. bg-fbe:emag-bg:fbe:500), repeat for each account; "
        "replaces the default main and fbe (and --main-products, --platform); PRODUCTS defaults to --products",
    ),
    fault_account: str = typer.Option(
        "all", help="account(s) the faults apply to: names, comma-separated, or all (both: main,fbe)"
    ),
) -> None:
    """Run the eMAG API sandbox until Ctrl-C; prints the `export` lines that point emag-sync at it."""
    import shlex

    from emag_sandbox.accounts import parse_account
    from emag_sandbox.server import RunningSandbox, run_foreground
    from emag_sandbox.state import Faults, SandboxState

    try:
        accounts = [parse_account(spec, products) for spec in account] or None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--account") from None
    try:
        state = SandboxState(
            products=products, main_products=main_products, seed=seed, rate_limit=not no_rate_limit,
            requests_per_second=requests_per_second, platform=platform.lower(), accounts=accounts,
        )  # fmt: skip
    except ValueError as exc:
        if accounts is not None:  # two accounts of one name
            raise typer.BadParameter(str(exc), param_hint="--account") from None
        fail(str(exc))
    try:
        for name in _fault_accounts(fault_account, list(state.accounts)):
            state.set_faults(
                name,
                Faults(
                    latency_seconds=latency, error_rate=error_rate, malformed_rate=malformed_rate,
                    error_pages=set(error_page), force_429=force_429, fail_from_request=fail_from_request,
                    empty_catalogue=empty_catalogue, mutate_after_page=shift_after_page,
                    mutate_remove=1 if shift_after_page else 0, mutate_add=1 if shift_after_page else 0,
                    hostile_records=[kind.strip() for kind in hostile_records.split(",") if kind.strip()],
                ),
            )  # fmt: skip
    except (ValueError, EmagSyncError) as exc:
        fail(str(exc))

    def announce(running: RunningSandbox) -> None:
        for name, value in {**running.env, "EMAG_SANDBOX_URL": running.base_url}.items():
            typer.echo(f"export {name}={shlex.quote(value)}")
        sizes = ", ".join(
            f"{name} {c.size} records ({state.accounts[name].platform} {state.accounts[name].kind})"
            for name, c in state.catalogues.items()
        )
        limit = "off" if no_rate_limit else f"{requests_per_second:g}/s per account"
        typer.echo(f"eMAG sandbox on {running.url} ({sizes}; rate limit {limit}); Ctrl-C stops it", err=True)

    try:
        run_foreground(state, host, port, announce)
    except OSError as exc:
        fail(f"sandbox cannot listen on {host}:{port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


def _fault_accounts(value: str, names: list[str]) -> list[str]:
    """``--fault-account``: names, comma-separated, ``all``, or ``both`` (main,fbe); BadParameter otherwise."""
    wanted = [part.strip().lower() for part in value.split(",") if part.strip()]
    if wanted == ["all"]:
        return names
    if wanted == ["both"]:
        wanted = ["main", "fbe"]
    unknown = [name for name in wanted if name not in names]
    if unknown or not wanted:
        raise typer.BadParameter(
            f"{value!r}: unknown account {', '.join(unknown) or '(none given)'}; "
            f"use all or names among {', '.join(names)}",
            param_hint="--fault-account",
        )
    return wanted


@app.command()
def docs(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(DATA_DOCS_PORT, min=0, max=65535, help="port; 0 picks a free one"),
) -> None:
    """Serve the data-quality reports (the Data Docs site) over HTTP until Ctrl-C.

    The links of the runs' data-quality artifacts are built on EMAG_SYNC_DATA_DOCS_URL, by default
    what this serves: http://127.0.0.1:8766/.
    """
    from emag_sync.cli.docs import serve_site
    from emag_sync.settings import get_settings
    from expectations.checkpoint import data_docs_site

    settings = get_settings()
    site = data_docs_site(settings.home, settings.data_docs_dir)

    def announce(url: str) -> None:
        typer.echo(f"Data Docs ({site}) on {url} ; Ctrl-C stops")

    try:
        serve_site(site, host, port, announce)
    except OSError as exc:
        fail(f"cannot serve Data Docs on {host}:{port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


@app.command()
def check(
    account: str = typer.Option("both", "--account", "-a", help=ACCOUNT_HELP),
    seller: str | None = typer.Option(None, "--seller", help=SELLER_HELP),
    reject_threshold: float = typer.Option(
        0.01, min=0.0, max=1.0, help="warn when a run rejected more than this share of records"
    ),
    output: OutputFormat = format_option(),
) -> None:
    """Run the data-quality checkpoint against the database; exit 1 on a critical failure."""
    from rich.text import Text

    from emag_sync.cli.console import console, dq_listing, err_console
    from emag_sync.cli.output import show
    from emag_sync.db import engine_from_settings
    from emag_sync.registry import resolve_accounts
    from emag_sync.settings import get_settings
    from expectations.checkpoint import run_checkpoints

    settings = get_settings()
    try:
        engine = engine_from_settings(settings)  # starts the embedded server if used, schema in place
        try:
            accounts = resolve_accounts(engine, account, seller=seller, settings=settings)
        finally:
            engine.dispose()
        url = engine.url
        results = list(
            run_checkpoints(
                url, [(a, None) for a in accounts], home=settings.home, reject_threshold=reject_threshold,
                docs_dir=settings.data_docs_dir, docs_url=settings.emag_sync_data_docs_url,
            ).values()
        )  # fmt: skip
    except EmagSyncError as exc:
        fail(str(exc))
    # A table has its notes under it on stdout; beside TSV or JSON (one document) they go to stderr.
    notes = console if output is OutputFormat.TABLE else err_console
    if output is not OutputFormat.TABLE:
        show([dq_listing(result) for result in results], output)
    for result in results:
        if output is OutputFormat.TABLE:
            show([dq_listing(result)], output)
        if result.warnings and not result.critical_failures:
            notes.print(Text.assemble(("warning:", "yellow"), " ", result.message))
        notes.print(f"data-quality report {result.account.title}: {result.report_url}", soft_wrap=True)
    notes.print(f"Data Docs: {results[0].data_docs_index} (served by `emag-sync docs`)", soft_wrap=True)
    failures = [result.message for result in results if result.critical_failures]
    if failures:
        fail("; ".join(failures))


# Commands that run a flow in this process, and how long their exit may wait for Prefect's background
# queues (log lines and events not yet sent to the API).
_FLOW_COMMANDS = frozenset({"sync", "demo"})
_DRAIN_SECONDS = 5.0


def run() -> None:
    """The ``emag-sync`` console script: the typer app; a command that ran a flow then exits at once.

    At interpreter exit Prefect waits for its queues of log lines and events with no bound (more than a
    minute when its API went away mid-run), and tearing the interpreter down costs most of a second. So
    once the command is done: output flushed, the queues given a bounded wait (none once the API is known
    gone), the exit handlers run (the embedded PostgreSQL stops), and the process ends.
    """
    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if len(sys.argv) > 1 and sys.argv[1] in _FLOW_COMMANDS and "prefect" in sys.modules:
        _finish_quickly(code)
    sys.exit(code)


def _finish_quickly(code: int) -> None:
    import atexit

    from emag_sync.prefect_api import is_lost

    sys.stdout.flush()
    sys.stderr.flush()
    if not is_lost():
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=_DRAIN_SECONDS)
        EventsWorker.drain_all(timeout=_DRAIN_SECONDS)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # python -m emag_sync.cli.main, as the console script
    run()
