"""Secrets from Prefect blocks, `emag-sync setup-prefect`, and eMAG pacing without the Prefect API."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr
from typer.testing import CliRunner

from emag_sync.accounts import AccountType, legacy_account
from emag_sync.api import open_client
from emag_sync.api.credentials import resolve_account_config, secret_block_names
from emag_sync.errors import MissingCredentialsError
from emag_sync.settings import Settings
from tests.helpers import drain_events

ENV_CREDENTIALS = {
    "emag_main_username": "env-main-user",
    "emag_main_password": "env-main-pass-Zq81",
    "emag_fbe_username": "env-fbe-user",
    "emag_fbe_password": "env-fbe-pass-Kx27",
}


def _settings(**overrides: object) -> Settings:
    values: dict[str, object] = {**ENV_CREDENTIALS, "emag_api_url": "http://127.0.0.1:9/api-3", **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def no_prefect_api() -> Iterator[None]:
    """As on a laptop without a Prefect server: no PREFECT_API_URL, not in a flow run."""
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


@pytest.fixture
def dead_prefect_api() -> Iterator[None]:
    """PREFECT_API_URL set, but nothing listens there (port 9 is discard, closed on loopback)."""
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        yield


@pytest.fixture
def prefect_client(prefect_harness: None) -> Iterator[object]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


def _delete_blocks(names: tuple[str, ...]) -> None:
    from prefect.blocks.system import Secret
    from prefect.utilities.asyncutils import run_coro_as_sync

    for name in names:
        with contextlib.suppress(ValueError):  # not there: nothing to clean
            run_coro_as_sync(Secret.adelete(name))


def _delete_limits(client: object, names: list[str]) -> None:
    from prefect.exceptions import ObjectNotFound

    for name in names:
        with contextlib.suppress(ObjectNotFound):
            client.delete_global_concurrency_limit_by_name(name)  # type: ignore[attr-defined]


# --- credentials -------------------------------------------------------------------------------------


def test_without_prefect_api_credentials_come_from_the_environment(no_prefect_api: None) -> None:
    config = resolve_account_config(_settings(), legacy_account(AccountType.FBE))
    assert (config.username, config.password.get_secret_value()) == ("env-fbe-user", "env-fbe-pass-Kx27")


def test_missing_everywhere_names_the_environment_variables(dead_prefect_api: None) -> None:
    started = time.monotonic()
    with pytest.raises(MissingCredentialsError, match="EMAG_MAIN_USERNAME and EMAG_MAIN_PASSWORD"):
        resolve_account_config(
            _settings(emag_main_username=None, emag_main_password=None), legacy_account(AccountType.MAIN)
        )
    assert time.monotonic() - started < 10, "an unreachable Prefect API must not stall the run"


def test_secret_blocks_win_over_the_environment_and_never_reach_the_log(
    prefect_harness: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    from emag_sync.api import credentials

    monkeypatch.setattr(credentials, "_logged", set())  # sources are logged once per process and run

    # "0123" would become the number 123 through Secret.get(), which JSON-decodes.
    Secret(value=SecretStr("block-fbe-user")).save("emag-fbe-username", overwrite=True)
    Secret(value=SecretStr("0123")).save("emag-fbe-password", overwrite=True)
    try:
        with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="emag_sync"):
            fbe = resolve_account_config(_settings(), legacy_account(AccountType.FBE))
            main = resolve_account_config(_settings(), legacy_account(AccountType.MAIN))
    finally:
        _delete_blocks(("emag-fbe-username", "emag-fbe-password"))
    assert (fbe.username, fbe.password.get_secret_value()) == ("block-fbe-user", "0123")
    assert (main.username, main.password.get_secret_value()) == ("env-main-user", "env-main-pass-Zq81")
    assert "0123" not in repr(fbe) and "0123" not in str(fbe)
    logged = caplog.text
    assert (
        "fbe: username from Prefect Secret block emag-fbe-username; password from Prefect Secret block "
        "emag-fbe-password" in logged
    )
    assert "main: username from the environment (EMAG_MAIN_USERNAME); password from the environment" in logged
    assert "fbe: EMAG_FBE_PASSWORD in the environment differs from Secret block emag-fbe-password" in logged
    assert "emag-main-password" in logged  # the fallback was logged, by block name
    for secret in ("0123", "env-main-pass-Zq81", "env-fbe-pass-Kx27"):
        assert secret not in logged


# --- eMAG pacing asks nothing of Prefect ---------------------------------------------------------------


class _CountingPrefect(BaseHTTPRequestHandler):
    """A stand-in Prefect API that counts what it is asked (and answers 503)."""

    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self._count()

    def do_POST(self) -> None:
        self._count()

    def _count(self) -> None:
        type(self).asked.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_emag_requests_ask_nothing_of_the_prefect_api(
    db_env: object, serve_sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Earlier versions asked a Prefect global limit once per eMAG request; the budget is the database's now.
    PREFECT_API_URL names a server that counts every call: 12 eMAG requests at full pace make none."""
    from emag_sandbox.state import SandboxState
    from emag_sync.settings import get_settings

    _CountingPrefect.asked = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingPrefect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:
        with serve_sandbox(SandboxState(products=50, rate_limit=True)) as running:
            for name, value in running.env.items():
                monkeypatch.setenv(name, value)
            settings = get_settings()
            config = resolve_account_config(settings, legacy_account(AccountType.FBE))  # as the preflight
            with temporary_settings(updates={PREFECT_API_URL: api}), open_client(settings, config) as client:
                for _ in range(12):
                    client.count()
                counters = client.stats.counters()
    finally:
        server.shutdown()
    assert (counters.api_requests, counters.rate_limited) == (12, 0)
    assert _CountingPrefect.asked == []


# --- artifacts against a busy or a gone Prefect API ---------------------------------------------------


class _BusyProxy(BaseHTTPRequestHandler):
    """Passes every call on to the real Prefect server, except while ``busy`` > 0: then it answers 503, as
    Prefect's SQLite server does while another writer holds its database (Retry-After 0: no waiting here)."""

    target: ClassVar[str] = ""
    busy: ClassVar[int] = 0
    refused: ClassVar[int] = 0

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def do_DELETE(self) -> None:
        self._forward()

    def _forward(self) -> None:
        import httpx

        cls = type(self)
        if cls.busy > 0:
            cls.busy -= 1
            cls.refused += 1
            body = b'{"exception_message": "Service Unavailable"}'
            self.send_response(503)
            self.send_header("Retry-After", "0")
        else:
            length = int(self.headers.get("Content-Length") or 0)
            answer = httpx.request(
                self.command,
                cls.target + self.path.removeprefix("/api"),
                content=self.rfile.read(length) if length else None,
                headers={
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                },
            )
            body = answer.content
            self.send_response(answer.status_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_busy_prefect_api_loses_no_artifact_and_only_repeated_failures_give_it_up(
    prefect_client: Any,
) -> None:
    """A Prefect server that answers 503 for a moment (its database busy) gets the record asked again, not
    the whole run's artifacts dropped; one record that cannot be made is skipped with one line; only three in
    a row make the run stop asking; a server that is not there at all is given up at once."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from emag_sync import prefect_api
    from tasks.artifacts import publish_summary_task, record_in_prefect

    _BusyProxy.target, _BusyProxy.busy, _BusyProxy.refused = PREFECT_API_URL.value(), 0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BusyProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    said: list[str] = []
    listener = logging.Handler(logging.INFO)
    listener.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("tasks.artifacts").addHandler(listener)
    prefect_api.reset()
    try:
        with temporary_settings(
            updates={PREFECT_API_URL: f"http://127.0.0.1:{server.server_address[1]}/api"}
        ):
            _BusyProxy.busy = 2
            publish_summary_task.fn("| account | outcome |\n|---|---|\n| busy-proof | succeeded |")
            assert _BusyProxy.refused == 2 and not prefect_api.is_lost()
            found = prefect_client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["emag-sync-summary"]))
            )
            assert any("busy-proof" in str(a.data) for a in found)
            assert said == []

            _BusyProxy.busy = 10**6  # busy from now on
            for n in (1, 2):
                assert (
                    record_in_prefect(f"record {n}", lambda: create_markdown_artifact("x", key="busy"))
                    is None
                )
                assert not prefect_api.is_lost()
            assert record_in_prefect("record 3", lambda: create_markdown_artifact("x", key="busy")) is None
            assert prefect_api.is_lost()
            drain_events()  # the events the artifacts emitted went to the stand-in: not later tests' too
        assert said == [
            f"the Prefect API did not record record {n}: 503 Service Unavailable (3 attempts); the run goes on"
            for n in (1, 2, 3)
        ]

        prefect_api.reset()
        with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
            started = time.monotonic()
            assert record_in_prefect("a gone API's record", lambda: create_markdown_artifact("x")) is None
            assert prefect_api.is_lost() and time.monotonic() - started < 5
            drain_events()
    finally:
        logging.getLogger("tasks.artifacts").removeHandler(listener)
        prefect_api.reset()
        server.shutdown()


# --- setup command -----------------------------------------------------------------------------------


def test_setup_prefect_creates_blocks_and_pool_idempotently_and_removes_old_rate_limits(
    prefect_client: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    from emag_sync.cli import app

    for field, value in ENV_CREDENTIALS.items():
        monkeypatch.setenv(field.upper(), value)
    monkeypatch.delenv("EMAG_MAIN_PASSWORD")
    # An install set up by an earlier version has the limit it asked once per eMAG request.
    prefect_client.create_global_concurrency_limit(  # type: ignore[attr-defined]
        GlobalConcurrencyLimitCreate(name="emag-api-fbe", limit=1, slot_decay_per_second=3.0)
    )
    runner = CliRunner()
    try:
        first = runner.invoke(app, ["setup-prefect"])
        second = runner.invoke(app, ["setup-prefect"])
        pool = prefect_client.read_work_pool("emag-sync-pool")  # type: ignore[attr-defined]
        fbe = resolve_account_config(
            _settings(emag_fbe_username=None, emag_fbe_password=None), legacy_account(AccountType.FBE)
        )
        with pytest.raises(ObjectNotFound):
            prefect_client.read_global_concurrency_limit_by_name("emag-api-fbe")  # type: ignore[attr-defined]
    finally:
        _delete_blocks(secret_block_names(legacy_account(kind) for kind in AccountType))
        _delete_limits(prefect_client, ["emag-api-fbe"])
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "Secret block emag-fbe-password: created from EMAG_FBE_PASSWORD" in first.output
    assert "Secret block emag-main-password: skipped, EMAG_MAIN_PASSWORD not set" in first.output
    assert "global concurrency limit emag-api-fbe: removed" in first.output
    assert "emag-api-main" not in first.output  # there was none to remove
    assert "global concurrency limit" not in second.output
    assert "Secret block emag-fbe-password: unchanged" in second.output
    assert "work pool emag-sync-pool: exists (type process)" in second.output
    for secret in ENV_CREDENTIALS.values():
        assert secret not in first.output + second.output
    assert pool.type == "process"
    assert (fbe.username, fbe.password.get_secret_value()) == ("env-fbe-user", "env-fbe-pass-Kx27")


def test_setup_prefect_without_api_url_says_what_to_do(no_prefect_api: None) -> None:
    from emag_sync.cli import app

    result = CliRunner().invoke(app, ["setup-prefect"])
    assert result.exit_code == 1
    assert "PREFECT_API_URL is not set" in result.output
