"""How the API is served: uvicorn with an HTTP protocol that bounds slow and many clients before any ASGI code
runs (header deadline and size, connections in all and per client address), and the config `serve` and the
tests share.

uvicorn itself only times out idle keep-alive connections: a client that opens a socket and never finishes its
request head would hold it forever, and llhttp accepts headers of any size.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from marketplace.settings import MarketplaceSettings

log = logging.getLogger(__name__)


def _plain(status: str, message: str) -> bytes:
    code = status.split(" ", 1)[1].lower().replace(" ", "_")
    body = json.dumps(
        {"code": code, "component": "marketplace", "message": message, "retryable": True, "details": {}}
    ).encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + "connection: close\r\n\r\n").encode() + body


REQUEST_TIMEOUT = _plain("408 Request Timeout", "request head not received in time")
HEADERS_TOO_LARGE = _plain("431 Request Header Fields Too Large", "request head too large")
TOO_MANY = _plain("503 Service Unavailable", "too many connections")


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config plus the limits GuardedProtocol reads (module level, so workers can unpickle it)."""

    def __init__(self, app: Any, *, settings: MarketplaceSettings, **kwargs: Any) -> None:
        self.header_timeout_s = settings.header_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self.max_connections = settings.max_connections
        self.max_connections_per_ip = settings.max_connections_per_ip
        kwargs.setdefault("timeout_keep_alive", settings.keep_alive_s)
        kwargs.setdefault("server_header", False)  # no software name and version to a stranger
        kwargs.setdefault("forwarded_allow_ips", settings.forwarded_allow_ips)
        super().__init__(app, http=GuardedProtocol, **kwargs)


class GuardedProtocol(HttpToolsProtocol):
    """httptools' protocol with a deadline and a size cap on each request head and connection limits."""

    per_address: Counter[str] = Counter()  # open connections per client address, in this process

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout_s: float = getattr(config, "header_timeout_s", 10.0)
        self.max_header_bytes: int = getattr(config, "max_header_bytes", 64 * 1024)
        self.max_connections: int = getattr(config, "max_connections", 2048)
        self.max_per_address: int = getattr(config, "max_connections_per_ip", 256)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._address: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else None
        if self._address is not None:
            self.per_address[self._address] += 1
        if len(self.connections) > self.max_connections or (
            self._address is not None and self.per_address[self._address] > self.max_per_address
        ):
            self._refuse(TOO_MANY)
            return
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._address is not None:
            self.per_address[self._address] -= 1
            if self.per_address[self._address] <= 0:
                del self.per_address[self._address]
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        awaiting_head = self._head_timer is not None
        super().data_received(data)
        # still no complete head after this read (a read is at most 256 KiB: the parser's share stays bounded)
        if awaiting_head and self._head_timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse(HEADERS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._await_head()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._refuse(REQUEST_TIMEOUT)

    def _refuse(self, answer: bytes) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()


def server_config(app: Any, settings: MarketplaceSettings, **kwargs: Any) -> GuardedConfig:
    """The uvicorn config of `hashgrid marketplace serve` (and of the tests that serve the app)."""
    return GuardedConfig(app, settings=settings, **kwargs)


def serve(config: GuardedConfig) -> None:
    """Run the server, with `config.workers` processes sharing one socket (as `uvicorn.run` does)."""
    server = uvicorn.Server(config)
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
    else:
        server.run()
