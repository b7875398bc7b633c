"""HTTP plumbing shared by the sync and async clients.

A resource method describes its request as a :class:`Call` (method, path, query, body
and a parser for the envelope's ``data``). :class:`SyncHTTP` and :class:`AsyncHTTP`
send calls; everything else (headers, envelope unwrapping, error mapping, the 429
retry decision) is done by the pure functions here, so the two differ only in
``await``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Generic, TypeVar

import httpx

from ._errors import RateLimitError, TransportError, VoidVMError, error_class_for
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncHTTP",
    "Call",
    "RetryPolicy",
    "SyncHTTP",
    "error_from_response",
    "unwrap",
]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://localhost:3000/api/v1"
USER_AGENT = f"voidvm-python/{__version__}"

T = TypeVar("T")


def _identity(data: Any) -> Any:
    return data


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API request and how to turn the envelope's ``data`` into a result."""

    method: str
    path: str
    parse: Callable[[Any], T] = _identity
    params: Mapping[str, Any] | None = None
    json: Any = None
    #: A raw request body (bytes or an open binary file, streamed), instead of ``json``.
    content: bytes | IO[bytes] | None = None
    timeout: float | None = None
    authenticated: bool = True
    #: False for bodies that cannot be sent twice (streamed uploads).
    retryable: bool = True
    #: ``parse`` is given the whole envelope rather than its ``data`` (a 202 answer also holds
    #: the ``operation`` doing the work).
    envelope: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Automatic retry of 429 answers: at most ``max_retries`` extra attempts, each
    after the server's ``Retry-After`` (or ``default_wait``), never longer than
    ``max_wait`` seconds (a longer hint raises :class:`RateLimitError` at once)."""

    enabled: bool = True
    max_retries: int = 3
    default_wait: float = 1.0
    max_wait: float = 60.0

    def delay(self, error: VoidVMError, attempt: int) -> float | None:
        """Seconds to sleep before retrying ``error`` (attempt counts from 0), or None."""
        if not self.enabled or not isinstance(error, RateLimitError):
            return None
        if attempt >= self.max_retries:
            return None
        wait = self.default_wait if error.retry_after is None else error.retry_after
        if wait > self.max_wait:
            return None
        return max(wait, 0.0)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` is either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> VoidVMError:
    """Build the exception for an error answer (envelope or not)."""
    body = _json_or_none(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or f"HTTP_{response.status_code}")
        message = str(error.get("message") or response.reason_phrase)
        details = error.get("details")
    else:
        code = f"HTTP_{response.status_code}"
        message = response.reason_phrase or "error"
        details = response.text[:500] or None
    cls = error_class_for(response.status_code, code)
    request_id = response.headers.get("x-request-id")
    if issubclass(cls, RateLimitError):
        return cls(
            message,
            code=code,
            details=details,
            status=response.status_code,
            request_id=request_id,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    return cls(
        message,
        code=code,
        details=details,
        status=response.status_code,
        request_id=request_id,
    )


def unwrap(response: httpx.Response, *, envelope: bool = False) -> Any:
    """Return the envelope's ``data`` (the whole envelope with ``envelope``) or raise the
    mapped error."""
    if response.status_code >= 400:
        raise error_from_response(response)
    if response.status_code == 204 or not response.content:
        return None
    body = _json_or_none(response)
    if not isinstance(body, dict) or "success" not in body:
        raise VoidVMError(
            "the server answered without the VoidVM envelope",
            code="BAD_RESPONSE",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
        )
    if body.get("success") is False:
        raise error_from_response(response)
    return body if envelope else body.get("data")


def _transport_error(exc: httpx.HTTPError, request: httpx.Request) -> TransportError:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return TransportError(f"{request.method} {request.url.path} {kind}: {exc}")


@dataclass
class _Session:
    """State shared by both flavours: where the server is and who we are."""

    base_url: str
    token: str | None
    timeout: float
    retry: RetryPolicy
    headers: dict[str, str] = field(default_factory=dict)
    #: Told the seconds about to be waited out before each 429 retry (the CLI prints a notice).
    on_rate_limit: Callable[[float], None] | None = None

    def build(self, client: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        headers = dict(self.headers)
        if call.authenticated and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        content = None
        if call.content is not None:
            headers["Content-Type"] = "application/octet-stream"
            content = self.body(call.content)
        params = {k: _query_value(v) for k, v in (call.params or {}).items() if v is not None}
        timeout = self.timeout if call.timeout is None else max(call.timeout, self.timeout)
        return client.build_request(
            call.method,
            call.path,
            params=params or None,
            json=call.json,
            content=content,
            headers=headers,
            timeout=timeout,
        )

    def body(self, content: bytes | IO[bytes]) -> Any:
        return content

    def retry_delay(self, call: Call[Any], error: VoidVMError, attempt: int) -> float | None:
        """Seconds to wait before sending ``call`` again after ``error``, or None."""
        wait = self.retry.delay(error, attempt) if call.retryable else None
        if wait is not None:
            logger.info("rate limited on %s %s; retrying in %.2fs", call.method, call.path, wait)
            if self.on_rate_limit is not None:
                self.on_rate_limit(wait)
        return wait


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _default_headers(extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    headers.update(extra or {})
    return headers


def normalize_base_url(base_url: str) -> str:
    return base_url.rstrip("/")


_CHUNK = 1024 * 1024


async def _read_in_thread(handle: IO[bytes]) -> AsyncIterator[bytes]:
    """Stream a blocking file to an async request without blocking the event loop."""
    while chunk := await asyncio.to_thread(handle.read, _CHUNK):
        yield chunk


class SyncHTTP(_Session):
    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float,
        retry: RetryPolicy,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(normalize_base_url(base_url), token, timeout, retry)
        self.headers = _default_headers(headers)
        self.client = httpx.Client(base_url=self.base_url, transport=transport)

    def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            request = self.build(self.client, call)
            try:
                response = self.client.send(request)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, request) from exc
            try:
                return call.parse(unwrap(response, envelope=call.envelope))
            except VoidVMError as error:
                wait = self.retry_delay(call, error, attempt)
                if wait is None:
                    raise
                time.sleep(wait)
                attempt += 1

    def close(self) -> None:
        self.client.close()


class AsyncHTTP(_Session):
    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float,
        retry: RetryPolicy,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(normalize_base_url(base_url), token, timeout, retry)
        self.headers = _default_headers(headers)
        self.client = httpx.AsyncClient(base_url=self.base_url, transport=transport)

    def body(self, content: bytes | IO[bytes]) -> Any:
        if isinstance(content, bytes):
            return content
        return _read_in_thread(content)

    async def send(self, call: Call[T]) -> T:
        attempt = 0
        while True:
            request = self.build(self.client, call)
            try:
                response = await self.client.send(request)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, request) from exc
            try:
                return call.parse(unwrap(response, envelope=call.envelope))
            except VoidVMError as error:
                wait = self.retry_delay(call, error, attempt)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                attempt += 1

    async def aclose(self) -> None:
        await self.client.aclose()
