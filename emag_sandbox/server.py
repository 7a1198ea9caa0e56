"""Run the sandbox on a loopback port: in a background thread for tests, or in the foreground for the CLI."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import uvicorn

from emag_sandbox.accounts import LEGACY_NAMES
from emag_sandbox.app import API_PREFIX, create_app
from emag_sandbox.state import SandboxState
from emag_sync.platforms import platform_named

STARTUP_TIMEOUT_SECONDS = 15.0
SHUTDOWN_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class RunningSandbox:
    """Where a running sandbox listens and the environment that points emag-sync at it."""

    state: SandboxState
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The eMAG API base URL (``.../api-3``)."""
        return self.base_url + API_PREFIX

    def url_for(self, platform: str) -> str:
        """The API base URL of one platform's host (``.../emag-bg/api-3``): only its accounts open there."""
        return f"{self.base_url}/{platform_named(platform).code}{API_PREFIX}"

    @property
    def control_url(self) -> str:
        """Base of the ``/_sandbox`` control endpoints."""
        return self.base_url + "/_sandbox"

    @property
    def env(self) -> dict[str, str]:
        """EMAG_API_URL and every account's sandbox credentials (well-known test values).

        ``main`` and ``fbe`` get today's EMAG_MAIN_* / EMAG_FBE_* (served at EMAG_API_URL); any other
        account EMAG_<NAME>_USERNAME, _PASSWORD and _API_URL, its platform's URL.
        """
        env = {"EMAG_API_URL": self.url}
        for name, account in self.state.accounts.items():
            username, password = self.state.credentials[name]
            env[account.env_prefix + "USERNAME"] = username
            env[account.env_prefix + "PASSWORD"] = password
            if name not in LEGACY_NAMES:
                env[account.env_prefix + "API_URL"] = self.url_for(account.platform)
        return env


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one. OSError (e.g. port in use) propagates."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _server(state: SandboxState) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(state), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
    )
    return uvicorn.Server(config)


@contextmanager
def serve(state: SandboxState, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningSandbox]:
    """Serve ``state`` with uvicorn in a background thread until the block exits."""
    sock = bind_socket(host, port)
    server = _server(state)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="emag-sandbox", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"eMAG sandbox did not start on {host}:{sock.getsockname()[1]}")
            time.sleep(0.01)
        yield RunningSandbox(state, host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_TIMEOUT_SECONDS)
        sock.close()


def run_foreground(
    state: SandboxState, host: str, port: int, on_ready: Callable[[RunningSandbox], None]
) -> None:
    """Serve ``state`` in this thread until Ctrl-C; ``on_ready`` runs once the port is bound."""
    sock = bind_socket(host, port)
    try:
        on_ready(RunningSandbox(state, host, sock.getsockname()[1]))
        _server(state).run(sockets=[sock])
    finally:
        sock.close()


@dataclass(frozen=True)
class SandboxProcess:
    """A sandbox running in a process of its own: its environment and its control endpoints."""

    env: dict[str, str]
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return self.env["EMAG_API_URL"]

    @property
    def control_url(self) -> str:
        return self.env["EMAG_SANDBOX_URL"] + "/_sandbox"


@contextmanager
def serve_in_process(*options: str) -> Iterator[SandboxProcess]:
    """``emag-sync sandbox --port 0 OPTIONS`` in a child process, stopped when the block exits.

    A server in its own process answers like a remote eMAG: a busy client process (transform, load)
    cannot delay it, so its rate-limit clock sees requests when they are really sent.
    """
    command = [
        sys.executable,
        "-c",
        "from emag_sync.cli import app; app()",
        "sandbox",
        "--port",
        "0",
        *options,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        env = _read_exports(process)
        _wait_until_listening(env["EMAG_SANDBOX_URL"], process)
        yield SandboxProcess(env, process)
    finally:
        process.terminate()
        try:
            process.wait(SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_exports(process: subprocess.Popen[str]) -> dict[str, str]:
    """Every ``export`` line up to EMAG_SANDBOX_URL, which the command prints last."""
    env: dict[str, str] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if not line.startswith("export "):
            continue
        name, _, value = line.removeprefix("export ").strip().partition("=")
        env[name] = shlex.split(value)[0] if value else ""
        if name == "EMAG_SANDBOX_URL":
            return env
    raise RuntimeError(f"eMAG sandbox process exited ({process.wait()}) before printing its environment")


def _wait_until_listening(base_url: str, process: subprocess.Popen[str]) -> None:
    parsed = urlsplit(base_url)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"eMAG sandbox process exited with {process.returncode}")
        try:
            with socket.create_connection((parsed.hostname, parsed.port), timeout=0.5):
                # bound before printing; accepting once uvicorn runs, a request proves it answers
                with httpx.Client() as client:
                    client.get(base_url + "/_sandbox/faults", timeout=2)
                return
        except (OSError, httpx.HTTPError):
            time.sleep(0.05)
    raise RuntimeError(f"eMAG sandbox at {base_url} did not answer within {STARTUP_TIMEOUT_SECONDS} s")
