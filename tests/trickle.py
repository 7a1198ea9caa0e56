"""A raw-socket HTTP server on loopback whose answers trickle in byte by byte (never pausing long enough
for a per-read timeout), in front of the sandbox or alone."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import httpx

COUNT_ANSWER = {"isError": False, "messages": [], "results": {"noOfItems": "1", "noOfPages": "1", "itemsPerPage": "100"}}  # fmt: skip


class TricklingServer:
    """Answers each request with ``upstream``'s answer (or a count envelope), trickled when ``trickle(request
    line, body)`` says so: ``where="body"`` sends the headers at once and the body a byte per ``interval``;
    ``where="headers"`` trickles from the first byte of the status line (a long padding header keeps it
    going). ``requests`` lists (request line, body) of everything received."""

    def __init__(
        self,
        where: str = "body",
        *,
        upstream: str | None = None,
        trickle: Callable[[str, bytes], bool] = lambda line, body: True,
        interval: float = 0.05,
    ) -> None:
        assert where in ("body", "headers")
        self.where, self.upstream, self.trickle, self.interval = where, upstream, trickle, interval
        self.requests: list[tuple[str, bytes]] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # accept() wakes up to see the stop flag
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TricklingServer:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while not self._stop.is_set():
                    request = _read_request(conn)
                    if request is None:
                        return
                    line, headers, body = request
                    self.requests.append((line, body))
                    status, content = self._answer(line, headers, body)
                    head = (
                        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(content)}\r\n"
                    )
                    if self.where == "headers":
                        head += f"X-Padding: {'p' * 2000}\r\n"
                    response = head.encode() + b"\r\n" + content
                    if not self.trickle(line, body):
                        conn.sendall(response)
                        continue
                    split = 0 if self.where == "headers" else len(head) + 2
                    conn.sendall(response[:split])
                    for index in range(split, len(response)):
                        if self._stop.is_set():
                            return
                        conn.sendall(response[index : index + 1])
                        time.sleep(self.interval)
            except OSError:
                return  # the client gave up and closed the connection

    def _answer(self, line: str, headers: dict[str, str], body: bytes) -> tuple[str, bytes]:
        if self.upstream is None:
            return "200 OK", json.dumps(COUNT_ANSWER).encode() + b" " * 2000  # long enough to trickle
        path = line.split(" ")[1]
        path = path[path.index("/api-3") :]  # origin-form, or absolute-form when we are the proxy
        answer = httpx.post(
            self.upstream + path.removeprefix("/api-3"),
            content=body,
            headers={"Authorization": headers.get("authorization", ""), "Content-Type": "application/json"},
        )
        return f"{answer.status_code} {answer.reason_phrase}", answer.content


def _read_request(conn: socket.socket) -> tuple[str, dict[str, str], bytes] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (f.partition(":") for f in fields)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return line, headers, body
