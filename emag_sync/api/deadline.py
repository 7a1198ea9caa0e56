"""One deadline per request: EMAG_TIMEOUT_SECONDS bounds an attempt from connect to its last byte.

httpx's timeouts bound each socket operation, so an answer whose bytes trickle in (one a second, headers
or body) never times out. The client opens a ``request_deadline`` around each attempt; the transport's
network backend gives every connect, TLS handshake, read and write only the time left before it, and once
it has passed raises that operation's timeout. httpx maps those as usual: a read that ran out is a
``ReadTimeout`` (retried like any timeout), a write a ``WriteTimeout`` (an uncertain write, never resent).
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx


@dataclass(frozen=True)
class _Deadline:
    at: float  # time.monotonic()
    seconds: float

    def expired(self) -> str:
        return (
            f"no complete answer within {self.seconds:g} s (EMAG_TIMEOUT_SECONDS bounds a whole request, "
            "from connect to the last byte)"
        )


# Per thread of control: look-ahead page reads run in a thread pool, each attempt under its own deadline.
_current: ContextVar[_Deadline | None] = ContextVar("emag_request_deadline", default=None)


@contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Every network operation of requests sent inside this block ends within ``seconds`` of its start."""
    token = _current.set(_Deadline(time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _current.reset(token)


def _time_left(timeout: float | None, error: type[httpcore.TimeoutException]) -> float | None:
    """``timeout`` shrunk to the time left before the deadline; ``error`` when there is none left."""
    deadline = _current.get()
    if deadline is None:
        return timeout
    left = deadline.at - time.monotonic()
    if left <= 0:
        raise error(deadline.expired())
    return left if timeout is None else min(timeout, left)


def _past_deadline() -> _Deadline | None:
    deadline = _current.get()
    return deadline if deadline is not None and time.monotonic() >= deadline.at else None


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))
        except httpcore.ReadTimeout:
            deadline = _past_deadline()
            if deadline is None:
                raise  # httpx's own per-read timeout
            raise httpcore.ReadTimeout(deadline.expired()) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            self._stream.write(buffer, _time_left(timeout, httpcore.WriteTimeout))
        except httpcore.WriteTimeout:
            deadline = _past_deadline()
            if deadline is None:
                raise
            raise httpcore.WriteTimeout(deadline.expired()) from None

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(
            ssl_context, server_hostname, _time_left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with connects bounded by the request's deadline, and bounded streams."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _time_left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, _time_left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport (same options, proxies included) whose connections keep the request's deadline.

    httpx takes no network backend, so the pool it builds gets ours wrapped around its own; construction
    fails loudly if a new httpx or httpcore stops exposing it (the trickle tests would catch it too).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        pool = self._pool
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(backend, httpcore.NetworkBackend):
            raise RuntimeError(
                "httpx/httpcore changed: the connection pool has no network backend to bound requests with"
            )
        pool._network_backend = _DeadlineBackend(backend)


def environment_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), as httpx
    would pick it itself: a client given its own transport no longer reads these variables."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    chosen = proxies.get(parts.scheme) or proxies.get("all")
    if not chosen or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return chosen if "://" in chosen else f"http://{chosen}"
