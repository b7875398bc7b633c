"""How uvicorn serves the app: one `uvicorn.Config` for `voidvm-server serve` and the tests.

On top of uvicorn's defaults:
- Slow clients: a request's line and headers must arrive within `header_timeout_seconds` of its
  first byte (of the connection, for the first request), and may take at most 64 KiB; uvicorn
  itself waits for them forever, so 50 connections sending a byte every few seconds would stay
  open for good. Bodies have their own deadline in `RequestContextMiddleware`.
- A cap on open connections (`max_connections`, HTTP and WebSocket together): the next one is
  answered 503 in the envelope and closed.
- Forwarded headers (`X-Forwarded-For`, `X-Forwarded-Proto`) are believed only from the proxies
  named in `trusted_proxies`: by default nobody's, where uvicorn would trust 127.0.0.1, which
  every local user (and, before guest isolation, every guest) can be.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voidvm_server.api.envelope import error_body
from voidvm_server.api.ws.deadline import AbortableWebSocketsProtocol
from voidvm_server.config import Settings

MAX_HEADER_BYTES = 64 * 1024
_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def _raw_error(status: int, code: str, message: str) -> bytes:
    payload = json.dumps(error_body(code, message)).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n"
        "connection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + payload


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a header size cap and a connection
    cap. `serving_config` sets the two class attributes on a subclass of its own."""

    header_timeout: float = 10.0
    max_connections: int = 2048

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._tail = b""  # the last bytes counted, to find a header end split between two reads

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.server_state.connections) > self.max_connections:
            self._refuse(503, "SERVER_BUSY", "The server has too many open connections; retry shortly")
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self._idle():
            self._arm()  # the first bytes of the next request: its headers are due now
        if self._header_deadline is not None:
            # Count the headers only: a fast client's first read may carry its body too.
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = seen[-3:]
            if self._header_bytes > MAX_HEADER_BYTES:
                message = f"Request headers are limited to {MAX_HEADER_BYTES} bytes"
                self._refuse(431, "HEADERS_TOO_LARGE", message)
                return
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        # Answered before its body was read (a GET with a Content-Length, a refusal): the rest of
        # that body would hold the connection open with no deadline. Close it.
        unread = cycle is not None and cycle.response_complete and cycle.more_body and not self.pipeline
        if unread and not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # the next request on a kept-alive connection: its headers are due now

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_bytes, self._tail = 0, b""
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self._idle():  # a pipelined request waits for the one being answered: later
            self._arm()
            return
        message = f"The request headers did not arrive within {self.header_timeout:g} s"
        self._refuse(408, "REQUEST_TIMEOUT", message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_raw_error(status, code, message))
            self.transport.close()


def serving_config(
    app: Any, settings: Settings, *, host: str | None = None, port: int | None = None
) -> uvicorn.Config:
    protocol = type(
        "VoidVMHttpProtocol",
        (GuardedHttpProtocol,),
        {"header_timeout": settings.header_timeout_seconds, "max_connections": settings.max_connections},
    )
    trusted = settings.trusted_proxies
    return uvicorn.Config(
        app,
        host=settings.host if host is None else host,
        port=settings.port if port is None else port,
        log_config=None,
        lifespan="on",  # a start-up failure (say, the default-password refusal) stops the server
        http=protocol,
        ws=AbortableWebSocketsProtocol,  # uvicorn's default, plus a way to drop stalled clients
        # A backstop only: the app refuses messages over ws_max_message_bytes itself, in its
        # own words (an `error`, then close 1009).
        ws_max_size=settings.ws_max_message_bytes * 4,
        ws_ping_interval=settings.ws_ping_interval_seconds,
        ws_ping_timeout=settings.ws_ping_interval_seconds,
        # No permessage-deflate: VoidVM's messages are small JSON and console bytes, and
        # compressing each one for each socket was a fifth of a worker's time in a fan-out to
        # 500 sockets (docs/benchmarks.md), for a few dozen bytes saved a message.
        ws_per_message_deflate=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        server_header=False,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
    )
