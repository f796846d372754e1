"""Fixtures of the zoo tests: an isolated cache and a local HTTP file server with failure modes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass
class ServerState:
    """What the test server serves and how it misbehaves, and the requests it saw.

    ``mode``: ``"ok"``; ``"corrupt"`` (one byte flipped); ``"ignore_range"`` (always 200).
    ``drops_left``: how many more full-file answers to cut off half-way.
    ``chunk_delay_s``: pause between 4 KiB chunks, to make concurrent pulls overlap.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    mode: str = "ok"
    drops_left: int = 0
    chunk_delay_s: float = 0.0
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        return

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state: ServerState = self.server.state
        range_header = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, range_header))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        if state.mode == "corrupt":
            body = body[:10] + bytes([body[10] ^ 0xFF]) + body[11:]
        start = 0
        if range_header and state.mode != "ignore_range":
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        with state.lock:
            drop = state.drops_left > 0
            state.drops_left -= int(drop)
        if drop:  # send half, then close: the client sees a short read
            payload = payload[: len(payload) // 2]
        for offset in range(0, len(payload), 4096):
            self.wfile.write(payload[offset : offset + 4096])
            time.sleep(state.chunk_delay_s)


@pytest.fixture
def http_server() -> Iterator[tuple[str, ServerState]]:
    """A ThreadingHTTPServer on 127.0.0.1 (random port) in a thread; yields (base URL, state)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.state = ServerState()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server.state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _own_zoo_cache(zoo_cache: Path) -> Path:
    """Every zoo test gets its own empty cache and no zoo environment variables (``zoo_cache``)."""
    return zoo_cache
