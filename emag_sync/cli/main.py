"""The ``emag-sync`` command line: sandbox, sync, demo, check, runs, update-price."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import NoReturn

import typer

from emag_sync.cli.alerts import DEFAULT_STUCK_AFTER
from emag_sync.errors import EmagSyncError
from emag_sync.limits import MAX_ITEMS_PER_PAGE
from emag_sync.options import SyncOptions

app = typer.Typer(
    name="emag-sync",
    help="eMAG Marketplace products and offers into PostgreSQL, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """emag-sync: sync eMAG MAIN and FBE catalogues into PostgreSQL and check what was loaded."""
    from emag_sync.cli.console import offline_prefect_defaults

    offline_prefect_defaults()


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit 1."""
    typer.echo(f"emag-sync: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def sync(
    account: str = typer.Option("both", "--account", "-a", help="main, fbe or both"),
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
    )
    try:
        outcome = run_sync(get_settings(), account, options)
    except EmagSyncError as exc:
        _fail(str(exc))
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
        _fail(str(exc))
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def runs(limit: int = typer.Option(20, min=1, help="how many runs to show")) -> None:
    """Recent sync runs: status, counts, duration, 429s, data-quality outcome."""
    from emag_sync.cli.console import console, runs_table
    from emag_sync.db import engine_from_settings
    from emag_sync.settings import get_settings

    try:
        engine = engine_from_settings(get_settings())
    except EmagSyncError as exc:
        _fail(str(exc))
    try:
        console.print(runs_table(engine, limit=limit))
    finally:
        engine.dispose()


@app.command("update-price")
def update_price(
    sku: str | None = typer.Option(None, "--sku", help="the offer's SKU (part_number), e.g. EMG469"),
    account: str | None = typer.Option(None, "--account", help="main or fbe"),
    price: str | None = typer.Option(None, "--price", help="new sale price ex-VAT, e.g. 35.00"),
    min_price: str | None = typer.Option(None, "--min-price", help="new min_sale_price, else the stored"),
    max_price: str | None = typer.Option(None, "--max-price", help="new max_sale_price, else the stored"),
    file: Path | None = typer.Option(
        None, "--file", help="CSV with columns sku,account,price[,min_price,max_price] for a bulk update"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="look up, show and validate; send nothing"),
) -> None:
    """Set offer prices on eMAG (offer/save) and in the database, audited: one offer, or a CSV of many."""
    from emag_sync.cli import console as screen
    from emag_sync.db import engine_from_settings
    from emag_sync.prices import apply, rules
    from emag_sync.prices.csv_input import parse_price_csv
    from emag_sync.settings import get_settings

    console = screen.console

    single = [name for name, value in (("--sku", sku), ("--account", account), ("--price", price)) if value]
    if file is not None and (single or min_price or max_price):
        _fail("give either --file or --sku/--account/--price, not both")
    if file is None and len(single) < 3:
        _fail("give --sku, --account and --price (or --file prices.csv)")
    try:
        csv_text = file.read_text(encoding="utf-8") if file is not None else None
        request = None
        if file is None:
            request = rules.make_request(sku or "", account or "", price, min_price, max_price)
        settings = get_settings()
        engine = engine_from_settings(settings)
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror or exc}")
    except EmagSyncError as exc:
        _fail(str(exc))
    try:
        with apply.emag_writers(settings) as writer_for:
            if request is not None:
                result = apply.run_single(
                    engine, request, writer_for, requested_by=apply.requested_by_os_user(), source="cli",
                    show=lambda plan: console.print(screen.changes_table(plan)), dry_run=dry_run,
                )  # fmt: skip
                if result is None:
                    console.print(f"{request.where}: valid; nothing sent (--dry-run)")
                elif not result.ok:
                    _fail(f"{request.where}: {result.status}: {result.message}")
                else:
                    console.print(f"{request.where}: {result.message}")
                return
            parsed = parse_price_csv(csv_text or "")
            results = apply.run_bulk(
                engine, parsed.requests, writer_for, requested_by=apply.requested_by_os_user(),
                source="cli-bulk", dry_run=dry_run,
            )  # fmt: skip
    except EmagSyncError as exc:
        _fail(str(exc))
    finally:
        engine.dispose()
    rows = apply.result_rows(results, parsed.problems)
    console.print(screen.results_table(rows))
    console.print(f"price updates: {apply.summary(rows)}")
    ok = {"applied", "not-sent"} if dry_run else {"applied"}
    if any(row["status"] not in ok for row in rows):
        raise typer.Exit(1)


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
        help="alert when a sync deployment has no completed run for this long "
        "[default: its schedule's interval plus the interval again, at most 2 h more]",
    ),
    stuck_minutes: float = typer.Option(
        DEFAULT_STUCK_AFTER.total_seconds() / 60,
        "--stuck-minutes",
        min=0,
        help="alert when a sync run is still running after this long",
    ),
) -> None:
    """Create or update, on the server at PREFECT_API_URL: the credentials' Secret blocks (from the
    environment), the per-account rate limits emag-api-main/emag-api-fbe, the work pool and, with
    --notify-webhook or --notify-block, the alerting automations. Idempotent."""
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
        _fail(str(exc))
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
        _fail(str(exc))


@app.command()
def sandbox(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8765, min=0, max=65535, help="port; 0 picks a free one"),
    products: int = typer.Option(2550, min=0, help="FBE catalogue size"),
    main_products: int | None = typer.Option(None, min=0, help="MAIN catalogue size [default: 85% of FBE]"),
    seed: int = typer.Option(7, help="catalogue seed: same seed and sizes, same catalogues"),
    platform: str = typer.Option("ro", help="ro (RON), bg (BGN) or hu (HUF)"),
    no_rate_limit: bool = typer.Option(False, "--no-rate-limit", help="turn off eMAG's per-account limit"),
    requests_per_second: float = typer.Option(3.0, min=0.01, help="per-account limit (eMAG: 3/s, 180/min)"),
    latency: float = typer.Option(0.0, min=0.0, help="seconds added to every answer"),
    error_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="share of requests answered 500/502/504"),
    malformed_rate: float = typer.Option(0.0, min=0.0, max=1.0, help="share of records served malformed"),
    error_page: list[int] = typer.Option([], "--error-page", help="read page answering isError (repeat)"),
    force_429: int = typer.Option(0, "--force-429", min=0, help="first N requests answer 429"),
    fail_from_request: int | None = typer.Option(None, min=0, help="after N requests every call fails"),
    fault_account: str = typer.Option("both", help="account(s) the faults apply to: main, fbe or both"),
) -> None:
    """Run the eMAG API sandbox until Ctrl-C; prints the `export` lines that point emag-sync at it."""
    import shlex

    from emag_sandbox.server import RunningSandbox, run_foreground
    from emag_sandbox.state import Faults, SandboxState
    from emag_sync.accounts import parse_accounts

    try:
        state = SandboxState(
            products=products, main_products=main_products, seed=seed, rate_limit=not no_rate_limit,
            requests_per_second=requests_per_second, platform=platform.lower(),
        )  # fmt: skip
        for account in parse_accounts(fault_account):
            state.set_faults(
                account,
                Faults(
                    latency_seconds=latency, error_rate=error_rate, malformed_rate=malformed_rate,
                    error_pages=set(error_page), force_429=force_429, fail_from_request=fail_from_request,
                ),
            )  # fmt: skip
    except (ValueError, EmagSyncError) as exc:
        _fail(str(exc))

    def announce(running: RunningSandbox) -> None:
        for name, value in {**running.env, "EMAG_SANDBOX_URL": running.base_url}.items():
            typer.echo(f"export {name}={shlex.quote(value)}")
        sizes = ", ".join(f"{a.label} {c.size} records" for a, c in state.catalogues.items())
        limit = "off" if no_rate_limit else f"{requests_per_second:g}/s per account"
        typer.echo(f"eMAG sandbox on {running.url} ({sizes}; rate limit {limit}); Ctrl-C stops it", err=True)

    try:
        run_foreground(state, host, port, announce)
    except OSError as exc:
        _fail(f"sandbox cannot listen on {host}:{port}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        pass


@app.command()
def check(
    account: str = typer.Option("both", "--account", "-a", help="main, fbe or both"),
    reject_threshold: float = typer.Option(
        0.01, min=0.0, max=1.0, help="warn when a run rejected more than this share of records"
    ),
) -> None:
    """Run the data-quality checkpoint against the database; exit 1 on a critical failure."""
    from rich.markup import escape

    from emag_sync.accounts import parse_accounts
    from emag_sync.cli.console import console, dq_table
    from emag_sync.db import engine_from_settings
    from emag_sync.settings import get_settings
    from expectations.checkpoint import run_checkpoint

    try:
        accounts = parse_accounts(account)
    except EmagSyncError as exc:
        _fail(str(exc))
    settings = get_settings()
    try:
        engine = engine_from_settings(settings)  # starts the embedded server if used, schema in place
        url = engine.url
        engine.dispose()
        results = [
            run_checkpoint(url, a, run_id=None, home=settings.home, reject_threshold=reject_threshold)
            for a in accounts
        ]
    except EmagSyncError as exc:
        _fail(str(exc))
    for result in results:
        console.print(dq_table(result))
        if result.warnings and not result.critical_failures:
            console.print(f"[yellow]warning:[/] {escape(result.message)}")
    console.print(f"Data Docs: {results[0].data_docs_index}")
    failures = [result.message for result in results if result.critical_failures]
    if failures:
        _fail("; ".join(failures))
