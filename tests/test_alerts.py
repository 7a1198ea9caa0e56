"""Alerts as an operator gets them: `emag-sync setup-prefect --notify-webhook` against a real Prefect server,
`emag-sync serve` running prefect.yaml's deployments, and a loopback HTTP receiver standing in for the webhook.

The module shares one Prefect server of its own (the session harness evaluates proactive triggers too
rarely for a test), one receiver, one database, one sandbox and one `emag-sync serve`; the tests run in
file order, each judging only the notifications that arrived after it started. A sync-both run of MAIN
is held up (the MAIN lock held) from the start, so its stuck window passes while the other tests run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from uuid import uuid4

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from emag_sandbox.server import serve
from emag_sandbox.state import SandboxState
from emag_sync.accounts import Account, AccountType, legacy_account
from emag_sync.cli import app
from emag_sync.cli.alerts import (
    ALERTS_BLOCK_NAME,
    AlertOptions,
    Watched,
    alert_definitions,
    schedule_gap,
    selected_accounts,
    silence_window,
)
from emag_sync.cli.serve import deployment_specs
from emag_sync.db import make_engine
from emag_sync.errors import ConfigError
from emag_sync.locks import account_lock
from emag_sync.redact import redact_target_url as redact_url
from emag_sync.schema import offers
from tasks.alerts import ACCOUNT_SYNCED_EVENT, account_resource_id
from tests.helpers import drain_events, scratch_database
from tests.test_deployments import served_env, wait_for_deployment

SERVER_STARTUP_SECONDS = 120
RUN_TIMEOUT_SECONDS = 180
NOTIFY_SECONDS = 60  # the bound; the server delivers within a second or two
QUIET_SECONDS = 5  # how long after a window nothing more may arrive (1 s granularity, sub-second delivery)
QUIET_SECONDS = 3  # how long a test waits to be sure that no (further) notification comes
SILENCE = timedelta(seconds=15)
STUCK = timedelta(minutes=1)  # 2-4 times a clean served sync-fbe here (15-25 s Running, loaded machine)
TOKEN = "s3cr3t-T0k3n"
LEGACY = [legacy_account(AccountType.MAIN), legacy_account(AccountType.FBE)]


# --- unit: definitions and rendering ----------------------------------------------------------------


def test_silence_window_is_derived_from_the_schedule() -> None:
    assert schedule_gap(["17 4 * * *"]) == timedelta(hours=24)
    assert schedule_gap(["43 */2 * * *"]) == timedelta(hours=2)
    assert schedule_gap(["0 9 * * 1-5"]) == timedelta(days=3)  # Friday to Monday
    assert schedule_gap([]) is None
    assert silence_window(timedelta(hours=24)) == timedelta(hours=26)  # the example
    assert silence_window(timedelta(hours=2)) == timedelta(hours=4)  # twice the interval
    watched = Watched.from_specs(deployment_specs())
    assert watched.sync_gaps == {
        "sync-both": timedelta(hours=24),
        "sync-fbe": timedelta(hours=2),
        "sync-all": timedelta(hours=24),  # shipped switched off; it counts all the same
        "sync-accounts": None,  # sync-all's children: no schedule of their own
    }
    # An account's gap: the most frequent schedule among the sync deployments that sync it.
    accounts = [*LEGACY, Account("ro-acme", AccountType.MAIN, seller="acme")]
    assert watched.account_gaps(accounts) == {
        "fbe": timedelta(hours=2),
        "main": timedelta(hours=24),
        "ro-acme": timedelta(hours=24),
    }
    assert selected_accounts("all", accounts) == ["fbe", "main", "ro-acme"]
    assert selected_accounts("both, ro-acme, gone", accounts) == ["main", "fbe", "ro-acme"]
    assert selected_accounts("all", accounts, seller="acme") == ["ro-acme"]
    every_day = Watched(["sync-all"], {"sync-all": timedelta(hours=24)}, {"sync-all": ("all", None)})
    assert every_day.account_gaps(accounts) == dict.fromkeys(["fbe", "main", "ro-acme"], timedelta(hours=24))


def test_alert_options_are_checked_and_a_webhook_url_is_printed_without_its_token() -> None:
    assert redact_url(f"http://127.0.0.1:8080/hook?token={TOKEN}") == "http://127.0.0.1:8080/hook?token=***"
    assert redact_url("https://user:pw@hooks.slack.com/services/T0/B0/XYZ") == (
        "https://***@hooks.slack.com/services/***"
    )
    with pytest.raises(ConfigError, match="not both"):
        AlertOptions(notify_webhook="http://x/h", notify_block="ops")
    with pytest.raises(ConfigError, match=r"http\(s\) URL, got 'ftp://x/h\?token=\*\*\*'"):
        AlertOptions(notify_webhook=f"ftp://x/h?token={TOKEN}")
    with pytest.raises(ConfigError, match="--stuck-minutes must be at least 10 s"):
        AlertOptions(notify_block="ops", stuck_after=timedelta(seconds=5))


def _render(source: str, **context: object) -> str:
    from prefect.server.utilities.user_templates import render_user_template_sync

    return render_user_template_sync(source, context)


def test_external_text_in_a_notification_is_escaped_and_bounded() -> None:
    """State messages carry eMAG's text and SKUs: no Slack mention, no HTML, no unbounded wall of SKUs."""
    failure = alert_definitions(uuid4(), Watched.from_specs(deployment_specs()), "http://ui:4200")[0]
    action = failure.automation.actions[0]
    hostile = "fbe: <!channel> <b>EMG&1</b> " + "EMG9, " * 500
    run = SimpleNamespace(id="r1", name="brave-fox", parameters={"accounts": "fbe"})
    run.state = SimpleNamespace(name="Failed", message=hostile)
    context = {
        "flow": SimpleNamespace(name="emag-product-sync"),
        "deployment": SimpleNamespace(name="sync-fbe"),
    }
    body = _render(action.body, flow_run=run, **context)
    assert "fbe: &lt;!channel&gt; &lt;b&gt;EMG&amp;1&lt;/b&gt;" in body
    assert "<" not in body and len(body) < 1000
    assert "Run: http://ui:4200/runs/flow-run/r1" in body and "Accounts: fbe" in body
    assert _render(action.subject, flow_run=run, **context) == "emag-sync: sync-fbe Failed"

    silence = alert_definitions(
        uuid4(), Watched.from_specs(deployment_specs()), "http://ui:4200", accounts=LEGACY
    )[1]
    event = SimpleNamespace(
        resource=SimpleNamespace(name="fbe <!here>"),
        payload={"sync_run_id": 7},
        occurred=datetime(2026, 1, 5, 4, 30, tzinfo=UTC),
    )
    action = silence.automation.actions[0]
    assert _render(action.subject, event=event) == "emag-sync: account fbe &lt;!here&gt; not synced in 4 h"
    body = _render(action.body, flow_run=run, event=event, **context)
    assert body.startswith("Account fbe &lt;!here&gt; has not synced within 4 h, scheduled every 2 h.\n")
    assert "Last synced: 2026-01-05 04:30:00 UTC (sync run 7, " in body and "flow-run/r1" in body

    warnings = alert_definitions(uuid4(), Watched.from_specs(deployment_specs()), "http://ui:4200")[-1]
    event = SimpleNamespace(payload={"warnings": ["fbe: 2 offers <script>x</script>: EMG1 & EMG2"]})
    body = _render(warnings.automation.actions[0].body, flow_run=run, event=event, **context)
    assert "\n- fbe: 2 offers &lt;script&gt;x&lt;/script&gt;: EMG1 &amp; EMG2\n" in body


# --- the real parts -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prefect_server(pg_admin_url: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server of this module's own that evaluates proactive triggers every second.

    It is not told its UI URL (PREFECT_UI_URL), like most servers: the run links are baked in at set-up.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from benchmarks.pool import prefect_server

    home = tmp_path_factory.mktemp("prefect-alerts")
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",
        # The served deployments carry real cron schedules: nothing may run but what the tests start.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    }
    database = pg_admin_url.set(database="prefect_alerts")
    log = home / "server.log"
    with (
        prefect_server(database, env, log, timeout=SERVER_STARTUP_SECONDS) as api_url,
        temporary_settings(updates={PREFECT_API_URL: api_url}),
    ):
        try:
            yield api_url
        finally:
            drain_events()


@dataclass
class Post:
    at: float
    path: str
    subject: str
    body: str

    @property
    def text(self) -> str:
        return f"{self.subject}\n{self.body}"


class Receiver:
    """A loopback webhook that records every JSON POST."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                posts.append(Post(time.time(), self.path, data.get("subject", ""), data.get("body", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def since(self, start: float, kind: str = "") -> list[Post]:
        return [p for p in self.posts if p.at >= start and kind in p.subject]

    def wait_for(
        self, start: float, kind: str, count: int = 1, seconds: float = NOTIFY_SECONDS
    ) -> list[Post]:
        """The posts of ``kind`` since ``start`` once ``count`` arrived (then a quiet spell for extras)."""
        deadline = time.time() + seconds
        while len(self.since(start, kind)) < count and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(QUIET_SECONDS)
        return self.since(start, kind)


# Subjects by alert (see emag_sync/cli/alerts.py)
FAILED, SILENT, STUCK_KIND, WARNING = " Failed", "not synced in", "still running", "WARNING"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


@pytest.fixture(scope="module")
def module_database(pg_admin_url):
    """One database for the module's runs (the served flows and the test share it)."""
    with scratch_database(pg_admin_url, f"alerts_{os.getpid()}") as url:
        yield url


@dataclass
class Stack:
    api_url: str
    receiver: Receiver
    sandbox: SandboxState
    database_url: object
    setup_outputs: list[str]
    setup_options: list[str]  # those of the last two set-ups: the webhook and the test windows
    held_run: object  # sync-both of MAIN, waiting for the MAIN lock that the fixture holds

    def run(self, deployment: str, **parameters: object):
        from prefect.deployments import run_deployment

        return run_deployment(
            deployment, parameters=parameters or None, timeout=RUN_TIMEOUT_SECONDS, poll_interval=1
        )


def _setup(*options: str) -> str:
    result = CliRunner().invoke(app, ["setup-prefect", "--no-secrets", *options])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def stack(prefect_server, receiver, module_database, tmp_path_factory) -> Iterator[Stack]:
    """Alerts set up three times (a named block, then the webhook, then the same again), then `emag-sync
    serve` of the sync and check deployments against the sandbox (FBE 2,550 records) and the database,
    and the held-up sync-both run."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.deployments import run_deployment

    CustomWebhookNotificationBlock(
        name="ops", url=f"{receiver.url}/ops", json_data={"subject": "{{subject}}", "body": "{{body}}"}
    ).save("ops-hook", overwrite=True)
    webhook = [
        f"--notify-webhook={receiver.url}/hook?token={TOKEN}",
        f"--silence-hours={SILENCE.total_seconds() / 3600}",
        f"--stuck-minutes={STUCK.total_seconds() / 60}",
    ]
    outputs = [_setup("--notify-block", "ops-hook"), _setup(*webhook), _setup(*webhook)]

    state = SandboxState(products=2550, rate_limit=False)
    engine = make_engine(module_database)
    with serve(state) as sandbox, account_lock(engine, legacy_account(AccountType.MAIN)):
        env = served_env(sandbox, module_database, tmp_path_factory.mktemp("home"))
        names = ["sync-both", "sync-fbe", "dq-check"]
        command = [sys.executable, "-c", "from emag_sync.cli import app; app()", "serve", *names]
        # Its own process group: the flow run processes it starts are stopped with it.
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            for name in (
                "emag-product-sync/sync-both",
                "emag-product-sync/sync-fbe",
                "emag-dq-check/dq-check",
            ):
                wait_for_deployment(name, child)
            held = run_deployment("emag-product-sync/sync-both", parameters={"accounts": "main"}, timeout=0)
            yield Stack(prefect_server, receiver, state, module_database, outputs, webhook, held)
        finally:
            # With the held run, before the lock goes, so it never syncs (serve would wait for it).
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    engine.dispose()


def _lines(output: str, state: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("automation ") and f": {state}" in line]


# What the first set-up creates: the silence windows from prefect.yaml's schedules (FBE every 2 h, MAIN daily).
NAMES = [
    "emag-sync: run failed",
    "emag-sync: accounts silent for 4 h",
    "emag-sync: accounts silent for 26 h",
    "emag-sync: sync run stuck",
    "emag-sync: data-quality warnings",
]
# After the set-ups with the test windows: one silence window for every account.
FINAL_NAMES = [NAMES[0], "emag-sync: accounts silent for 15 s", *NAMES[3:]]


def test_setup_creates_the_automations_once_and_never_prints_the_token(stack: Stack) -> None:
    by_block, by_webhook, again = stack.setup_outputs
    assert "notification block ops-hook (custom-webhook): exists" in by_block
    assert "Secret blocks: left as they are (--no-secrets)" in by_block
    assert [line.split('"')[1] for line in _lines(by_block, "created")] == NAMES
    assert f"POST {stack.receiver.url}/hook?token=***): created" in by_webhook
    # The new target changes every action; the shorter windows change the stuck trigger and put every
    # account's silence into one automation of the new window, the ones of the old windows deleted.
    assert len(_lines(by_webhook, "updated")) == 3
    assert 'automation "emag-sync: run failed": updated actions' in by_webhook
    assert [line.split('"')[1] for line in _lines(by_webhook, "created")] == [FINAL_NAMES[1]]
    assert (
        'automation "emag-sync: accounts silent for 15 s": created (fbe, main not synced within 15 s'
        in by_webhook
    )
    assert sorted(line.split('"')[1] for line in _lines(by_webhook, "deleted")) == sorted(NAMES[1:3])
    assert len(_lines(again, "unchanged")) == 4 and "): unchanged" in again
    assert _lines(again, "deleted") == []
    for output in stack.setup_outputs:
        assert TOKEN not in output

    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock.load(ALERTS_BLOCK_NAME)
    assert TOKEN not in block.url  # the token sits among the block's secrets, obfuscated in the UI

    listed = subprocess.run(
        [sys.executable, "-m", "prefect", "automation", "ls"],
        env={**os.environ, "PREFECT_API_URL": stack.api_url, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    for name in FINAL_NAMES:
        assert name in listed.stdout, listed.stdout


def test_an_automation_switched_off_in_the_ui_stays_off(stack: Stack) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        [failed] = client.read_automations_by_name(NAMES[0])
        client.pause_automation(failed.id)
        try:
            output = _setup(*stack.setup_options)
            assert client.read_automation(failed.id).enabled is False
        finally:
            client.resume_automation(failed.id)
    assert len(_lines(output, "unchanged")) == 4, output


def test_setup_replaces_the_silence_alert_per_deployment_of_earlier_versions(stack: Stack) -> None:
    from prefect.automations import AutomationCore
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        [failed] = client.read_automations_by_name(NAMES[0])  # any automation, under the old name
        fields = failed.model_dump(include=set(AutomationCore.model_fields))
        client.create_automation(AutomationCore(**{**fields, "name": "emag-sync: sync-fbe silent"}))
        output = _setup(*stack.setup_options)
        assert client.read_automations_by_name("emag-sync: sync-fbe silent") == []
    assert (
        'automation "emag-sync: sync-fbe silent": deleted' in output and len(_lines(output, "unchanged")) == 4
    )


def test_setup_names_a_missing_or_wrong_block_in_one_line(stack: Stack) -> None:
    from prefect.blocks.system import Secret

    Secret(value="x").save("not-a-notifier", overwrite=True)
    for name, message in (
        ("nope", "no block named 'nope' on the Prefect server"),
        ("not-a-notifier", "block 'not-a-notifier' is a secret block, not a notification block"),
    ):
        result = CliRunner().invoke(app, ["setup-prefect", "--no-secrets", "--notify-block", name])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_without_a_target_setup_says_how_to_add_the_alerts_later(stack: Stack) -> None:
    output = _setup()
    assert "automations: skipped, no notification target" in output and "--notify-webhook URL" in output


def test_a_clean_sync_sends_nothing(stack: Stack) -> None:
    start = time.time()
    flow_run = stack.run("emag-product-sync/sync-fbe")
    assert flow_run.state.is_completed(), flow_run.state
    time.sleep(QUIET_SECONDS)
    assert stack.receiver.since(start, FAILED) == [] and stack.receiver.since(start, WARNING) == []
    # Its stuck window has not passed yet: the last test checks that no stuck alert ever named it.


def test_a_failed_data_quality_check_sends_one_notification_with_its_cause(stack: Stack) -> None:
    """The incident: FBE offers gone after a clean sync; the scheduled dq-check fails and says so, once."""
    engine = make_engine(stack.database_url)
    fbe = offers.c.account_type == AccountType.FBE.value
    try:
        with engine.begin() as conn:
            deleted = [
                dict(row) for row in conn.execute(delete(offers).where(fbe).returning(offers)).mappings()
            ]
        start = time.time()
        flow_run = stack.run("emag-dq-check/dq-check")
    finally:  # the next tests' syncs find the offers again
        with engine.begin() as conn:
            conn.execute(offers.insert(), deleted)
        engine.dispose()
    assert len(deleted) == 2550 and flow_run.state.is_failed(), flow_run.state
    posts = stack.receiver.wait_for(start, FAILED)
    assert len(posts) == 1, posts
    post = posts[0]
    assert post.path == f"/hook?token={TOKEN}"
    assert post.at - flow_run.state.timestamp.timestamp() < NOTIFY_SECONDS
    assert post.subject == "emag-sync: dq-check Failed"
    assert "fbe: active offers 0 != active products 2550" in post.body
    assert "emag-dq-check/dq-check" in post.body and "Accounts: both" in post.body
    assert f"{stack.api_url.removesuffix('/api')}/runs/flow-run/{flow_run.id}" in post.body
    assert [p for p in stack.receiver.since(start) if "2550" in p.text] == [post]
    assert TOKEN not in post.text


def test_data_quality_warnings_send_one_warning_per_run(stack: Stack) -> None:
    """3% of FBE records malformed: rejected, over the 1% threshold, a warning; the run stays Completed."""
    stack.sandbox.set_faults(legacy_account(AccountType.FBE), malformed_rate=0.03)
    try:
        start = time.time()
        flow_run = stack.run("emag-product-sync/sync-fbe")
    finally:
        stack.sandbox.set_faults(legacy_account(AccountType.FBE), malformed_rate=0.0)
    assert flow_run.state.is_completed(), flow_run.state
    posts = stack.receiver.wait_for(start, WARNING)
    assert len(posts) == 1, posts
    assert posts[0].subject == "emag-sync WARNING: data-quality warnings in sync-fbe"
    assert "WARNING (non-critical)" in posts[0].body
    assert "\n- fbe: rejected " in posts[0].body and "exceed 1.00%" in posts[0].body
    assert f"/runs/flow-run/{flow_run.id}" in posts[0].body
    assert stack.receiver.since(start, FAILED) == []

    start = time.time()
    flow_run = stack.run("emag-dq-check/dq-check")  # the check alone, on the same run history
    assert flow_run.state.is_completed(), flow_run.state
    posts = stack.receiver.wait_for(start, WARNING)
    assert [p.subject for p in posts] == ["emag-sync WARNING: data-quality warnings in dq-check"]


def test_an_account_that_stops_syncing_is_reported_by_name_and_only_it(stack: Stack) -> None:
    """One automation keeps a silence clock per account. FBE, last synced by the module's sync-fbe runs, is
    reported by name once its window has passed, its sync's run linked. Then, with synced events sent from
    here as syncs would send them: FBE syncs once and stops while MAIN keeps syncing every few seconds for
    longer than a window; FBE alone is reported, MAIN only once it stops too, one window after its own last
    sync. Never before the window."""
    last = _last_completed("sync-fbe")
    [fbe] = stack.receiver.wait_for(
        last.timestamp(), "account fbe", seconds=SILENCE.total_seconds() + NOTIFY_SECONDS
    )
    assert fbe.subject == "emag-sync: account fbe not synced in 15 s"
    assert fbe.body.startswith("Account fbe has not synced within 15 s.\n")
    assert "emag-product-sync/sync-fbe run " in fbe.body and "/runs/flow-run/" in fbe.body
    assert abs(_last_synced_named(fbe) - last) < timedelta(seconds=5)


def test_a_silent_account_is_reported_while_another_keeps_syncing(stack: Stack) -> None:
    """FBE syncs once and stops while MAIN keeps syncing every few seconds for longer than a window: FBE
    alone is reported, MAIN only once it stops too, one window after its own last sync."""
    start = time.time()
    _synced("fbe")
    main_synced: list[float] = []
    while time.time() < start + SILENCE.total_seconds() + 9:
        main_synced.append(_synced("main"))
        time.sleep(3)
    [fbe] = stack.receiver.wait_for(start, "account fbe")
    assert fbe.at >= start + SILENCE.total_seconds() - 1 and "sync run 1," in fbe.body
    assert stack.receiver.since(start, "account main") == []  # it kept syncing

    posts = stack.receiver.wait_for(
        main_synced[-1], "account main", seconds=SILENCE.total_seconds() + NOTIFY_SECONDS
    )
    assert [p.subject for p in posts] == ["emag-sync: account main not synced in 15 s"]
    assert posts[0].at >= main_synced[-1] + SILENCE.total_seconds() - 1
    assert stack.receiver.since(start, "account") == [fbe, *posts]
    for post in stack.receiver.since(0, SILENT):  # the module's earlier silences too
        assert post.at >= _last_synced_named(post).timestamp() + SILENCE.total_seconds() - 1


def _synced(account: str) -> float:
    """Send the account's synced event as its sync would (sync run 1), over a connection of its own that is
    closed once the event is sent: the session's shared events worker sends in the background, and after
    other tests have pointed clients elsewhere it may never send (the event lost, the silence unexplained).
    Returns when it was sent."""
    import asyncio

    from prefect.events import Event
    from prefect.events.clients import get_events_client

    event = Event(
        event=ACCOUNT_SYNCED_EVENT,
        resource={"prefect.resource.id": account_resource_id(account), "prefect.resource.name": account},
        payload={"sync_run_id": 1},
    )

    async def send() -> None:
        async with get_events_client() as client:
            await client.emit(event)

    asyncio.run(send())
    return event.occurred.timestamp()


def _last_synced_named(post: Post) -> datetime:
    named = post.body.split("Last synced: ")[1][:19]
    return datetime.strptime(named, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def test_a_sync_that_hangs_is_reported_once_and_no_other(stack: Stack) -> None:
    """The held sync-both run (waiting for the MAIN lock) is reported once its window has passed; the
    module's other runs, which finished in time, are not."""
    from prefect.client.orchestration import get_client

    held = stack.held_run
    started = _flow_run(held.id).start_time.timestamp()
    posts = stack.receiver.wait_for(started, STUCK_KIND, seconds=STUCK.total_seconds() + NOTIFY_SECONDS)
    assert [p.subject for p in posts] == ["emag-sync: sync-both still running after 1 min"]
    assert posts[0].at >= started + STUCK.total_seconds() - 1
    assert f"/runs/flow-run/{held.id}" in posts[0].body and "Accounts: main" in posts[0].body
    assert _flow_run(held.id).state.is_running()

    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.id != held.id and r.start_time]
    clean_fbe = [
        r for r in runs if r.parameters.get("accounts") == "fbe" and r.state and r.state.is_completed()
    ]
    assert clean_fbe, "the clean sync-fbe run at least"
    # Wait until every other run's window has passed: had one been reported, it would have been by then.
    latest = max(r.start_time.timestamp() for r in runs)
    time.sleep(max(0.0, latest + STUCK.total_seconds() + QUIET_SECONDS - time.time()))
    stuck = stack.receiver.since(0, STUCK_KIND)
    assert [r.name for r in runs if any(str(r.id) in p.body for p in stuck)] == []
    assert stuck == posts


def _flow_run(flow_run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def _last_completed(deployment: str) -> datetime:
    """When the deployment's latest Completed run ended, from the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
        )
    return max(datetime.fromtimestamp(run.state.timestamp.timestamp(), UTC) for run in runs)
