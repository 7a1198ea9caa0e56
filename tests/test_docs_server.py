"""`emag-sync docs` serves quietly: a browser abandoning a download is the client leaving, not an error."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit


def test_an_abandoned_download_prints_no_traceback(tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>reports</h1>", encoding="utf-8")
    (site / "big.bin").write_bytes(os.urandom(1024 * 1024) * 48)  # far more than the socket buffers hold
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAG_")}
    env.update(EMAG_SYNC_DATA_DOCS_DIR=str(site), EMAG_SYNC_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [sys.executable, "-c", "from emag_sync.cli import app; app()", "docs", "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as a terminal delivers it, even when the suite itself was started in the background by a
        # shell without job control (its children then inherit SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert server.stdout is not None
        announced = server.stdout.readline()
        url = announced.split(" on ")[1].split(" ;")[0]
        address = urlsplit(url)
        for _ in range(4):  # the browser starts the download, reads a little, and is gone (a reset)
            with socket.create_connection((address.hostname, address.port)) as client:
                client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
                client.recv(65536)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            time.sleep(0.3)
        with urllib.request.urlopen(url + "index.html", timeout=10) as page:  # and it still serves
            assert b"reports" in page.read()
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    assert server.returncode == 0
    assert stderr == "", stderr
