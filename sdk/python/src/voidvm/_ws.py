"""The WebSocket wire: URL, message framing, connection and error mapping.

Client → server ``{type, data, id?}``; server → client ``{type, data, id, timestamp}``.
:class:`Socket` is one open connection; it turns library exceptions into the SDK's
error tree, so callers only see :class:`~voidvm.VoidVMError` subclasses:

* a refused handshake (HTTP 401/403/429...) → the matching API error;
* an unreachable server, or a connection closed for a reason worth retrying
  (going away, try again later, abnormal closure) → :class:`SocketClosedError`, a
  :class:`~voidvm.TransportError`;
* a close for a policy reason (1008, 4001/4401 bad token, 4003/4403 forbidden, 4404) →
  :class:`~voidvm.AuthenticationError`, :class:`~voidvm.PermissionDeniedError` or
  :class:`~voidvm.NotFoundError`, which reconnecting would not fix.

An ``error`` message the server sends before closing is raised by the caller (events,
console) with its own code, so the close code is only the fallback.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ._errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    SocketClosedError,
    VoidVMError,
    error_class_for,
)
from ._http import parse_retry_after
from ._models import Operation, Record

__all__ = ["Message", "Socket", "open_socket", "ws_url"]

logger = logging.getLogger(__name__)

_API_PREFIX = "/api/v1"
_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def ws_url(base_url: str, token: str | None) -> str:
    """``http://host:3000/api/v1`` → ``ws://host:3000/ws?token=…`` (any path prefix in
    front of ``/api/v1``, as behind a reverse proxy, is kept)."""
    parts = urlsplit(base_url)
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"cannot derive a WebSocket URL from scheme {parts.scheme!r}")
    prefix = parts.path.rstrip("/")
    if prefix.endswith(_API_PREFIX):
        prefix = prefix[: -len(_API_PREFIX)]
    query = urlencode({"token": token}) if token else ""
    return urlunsplit((scheme, parts.netloc, f"{prefix}/ws", query, ""))


def _redacted(url: str) -> str:
    """The URL without its query string (which holds the token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class Message:
    """One message from the server. Events carry ``data.eventId`` (monotonic)."""

    type: str
    data: Record
    id: str | None = None
    timestamp: str | None = None

    @property
    def event_id(self) -> int | None:
        value = self.data.get("eventId")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def vm_id(self) -> str | None:
        value = self.data.get("vmId")
        return value if isinstance(value, str) else None

    @property
    def operation(self) -> Operation | None:
        """The operation an ``operation`` event carries (without its ``eventId``), else None."""
        if self.type != "operation":
            return None
        return Operation({k: v for k, v in self.data.items() if k != "eventId"})


def decode(raw: str | bytes) -> Message:
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise VoidVMError("the server sent a message that is not JSON", code="BAD_MESSAGE") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        raise VoidVMError("the server sent a message without a type", code="BAD_MESSAGE")
    data = payload.get("data")
    return Message(
        type=payload["type"],
        data=Record(data) if isinstance(data, dict) else Record(value=data),
        id=None if payload.get("id") is None else str(payload["id"]),
        timestamp=payload.get("timestamp"),
    )


def error_from_message(message: Message) -> VoidVMError:
    """An ``error`` message ``{code, message, vmId?, details?}`` as an exception."""
    code = str(message.data.get("code") or "ERROR")
    cls = error_class_for(None, code)
    text = str(message.data.get("message") or code)
    return cls(text, code=code, details=message.data.get("details"))


_CLOSE_ERRORS: dict[int, type[VoidVMError]] = {
    1008: PermissionDeniedError,  # policy violation, e.g. too many sockets
    4001: AuthenticationError,
    4401: AuthenticationError,
    4003: PermissionDeniedError,
    4403: PermissionDeniedError,
    4404: NotFoundError,
}


def _closed_error(exc: ConnectionClosed) -> VoidVMError:
    frame = exc.rcvd
    code = frame.code if frame is not None else None
    reason = (frame.reason if frame is not None else "") or "connection closed"
    if code is not None and code in _CLOSE_ERRORS:
        return _CLOSE_ERRORS[code](f"the server closed the WebSocket ({code}): {reason}")
    return SocketClosedError(f"WebSocket closed ({code}): {reason}", close_code=code)


def _handshake_error(exc: InvalidStatus) -> VoidVMError:
    response = exc.response
    status = response.status_code
    code: str | None = None
    message = f"WebSocket handshake refused with HTTP {status}"
    try:
        error = json.loads(response.body or b"{}").get("error") or {}
        code = error.get("code")
        message = error.get("message") or message
    except (ValueError, AttributeError):
        pass
    cls = error_class_for(status, code)
    if issubclass(cls, RateLimitError):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimitError(message, code=code, status=status, retry_after=retry_after)
    if issubclass(cls, ServerError):
        return SocketClosedError(message)
    return cls(message, code=code, status=status)


class Socket:
    """An open WebSocket speaking the VoidVM protocol."""

    def __init__(self, connection: ClientConnection, on_close: Callable[[Socket], None]) -> None:
        self._connection = connection
        self._on_close = on_close
        self._ids = itertools.count(1)

    async def send(self, type: str, data: dict[str, Any], *, id: str | None = None) -> str:
        """Send ``{type, data, id}``; returns the id used."""
        message_id = id or f"c{next(self._ids)}"
        frame = json.dumps({"type": type, "data": data, "id": message_id})
        try:
            await self._connection.send(frame)
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc
        return message_id

    async def recv(self) -> Message:
        try:
            raw = await self._connection.recv()
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc
        return decode(raw)

    async def close(self) -> None:
        try:
            await self._connection.close()
        finally:
            self._on_close(self)


async def open_socket(
    url: str, *, open_timeout: float, on_close: Callable[[Socket], None]
) -> Socket:
    """Connect to ``url``; errors are mapped as described in the module docstring."""
    where = _redacted(url)
    logger.debug("opening WebSocket %s", where)
    try:
        connection = await connect(url, open_timeout=open_timeout, max_size=None)
    except InvalidStatus as exc:
        raise _handshake_error(exc) from exc
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise SocketClosedError(f"cannot open WebSocket {where}: {type(exc).__name__}") from exc
    return Socket(connection, on_close)
