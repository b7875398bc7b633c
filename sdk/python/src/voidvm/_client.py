"""The two entry points: :class:`VoidVMClient` (blocking) and :class:`AsyncVoidVMClient`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from ._console import Console
from ._events import EventStream, TopicSpec, normalize_topics
from ._http import DEFAULT_BASE_URL, AsyncHTTP, RetryPolicy, SyncHTTP
from ._ws import Socket, open_socket, ws_url
from .resources import (
    AsyncAuth,
    AsyncImages,
    AsyncOperations,
    AsyncSystem,
    AsyncUsers,
    AsyncVMs,
    Auth,
    Images,
    Operations,
    System,
    Users,
    VMs,
)

__all__ = ["AsyncVoidVMClient", "VoidVMClient"]

#: Default per-request timeout in seconds. VM actions wait server-side for the target
#: state, and stop/restart get their own longer timeout on top of this.
DEFAULT_TIMEOUT = 60.0


class _ClientBase:
    _http: SyncHTTP | AsyncHTTP

    @property
    def base_url(self) -> str:
        return self._http.base_url

    @property
    def token(self) -> str | None:
        """The bearer token in use (a login JWT or a personal API token)."""
        return self._http.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._http.token = value

    @property
    def on_rate_limit(self) -> Callable[[float], None] | None:
        """Called with the seconds about to be waited before each automatic 429 retry."""
        return self._http.on_rate_limit

    @on_rate_limit.setter
    def on_rate_limit(self, callback: Callable[[float], None] | None) -> None:
        self._http.on_rate_limit = callback

    def __repr__(self) -> str:  # never shows the token
        return f"{type(self).__name__}(base_url={self.base_url!r})"


class VoidVMClient(_ClientBase):
    """Blocking client.

    >>> client = VoidVMClient(base_url="http://localhost:3000/api/v1", token="...")
    >>> vm = client.vms.create({"name": "my-vm", "cpu": 2, "memory": 2048, "disk": 20})
    >>> client.vms.start(vm["id"])  # doctest: +SKIP
    """

    _http: SyncHTTP

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_on_rate_limit: bool = True,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._http = SyncHTTP(
            base_url,
            token,
            timeout=timeout,
            retry=RetryPolicy(enabled=retry_on_rate_limit, max_retries=max_retries),
            transport=transport,
            headers=headers,
        )
        self.vms = VMs(self._http)
        self.images = Images(self._http)
        self.operations = Operations(self._http)
        self.users = Users(self._http)
        self.system = System(self._http)
        self.auth = Auth(self._http)

    @classmethod
    def login(cls, base_url: str, username: str, password: str, **options: Any) -> Self:
        """Log in with a username and password and return a client using the new token.
        ``options`` are the constructor's keyword arguments."""
        client = cls(base_url, **options)
        try:
            client.auth.login(username, password)
        except BaseException:
            client.close()
            raise
        return client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncVoidVMClient(_ClientBase):
    """asyncio client with the same resources (awaitable), plus live :meth:`events` and
    the serial :meth:`console` over the WebSocket. Sockets it opened are closed by
    :meth:`aclose` (or leaving ``async with``)."""

    _http: AsyncHTTP

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_on_rate_limit: bool = True,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        ws_open_timeout: float = 10.0,
    ) -> None:
        self._http = AsyncHTTP(
            base_url,
            token,
            timeout=timeout,
            retry=RetryPolicy(enabled=retry_on_rate_limit, max_retries=max_retries),
            transport=transport,
            headers=headers,
        )
        self._ws_open_timeout = ws_open_timeout
        self._sockets: set[Socket] = set()
        self.vms = AsyncVMs(self._http)
        self.images = AsyncImages(self._http)
        self.operations = AsyncOperations(self._http)
        self.users = AsyncUsers(self._http)
        self.system = AsyncSystem(self._http)
        self.auth = AsyncAuth(self._http)

    @classmethod
    async def login(cls, base_url: str, username: str, password: str, **options: Any) -> Self:
        client = cls(base_url, **options)
        try:
            await client.auth.login(username, password)
        except BaseException:
            await client.aclose()
            raise
        return client

    @property
    def ws_url(self) -> str:
        """The WebSocket URL (it contains the token: do not log it)."""
        return ws_url(self.base_url, self.token)

    async def _open_socket(self) -> Socket:
        socket = await open_socket(
            self.ws_url, open_timeout=self._ws_open_timeout, on_close=self._sockets.discard
        )
        self._sockets.add(socket)
        return socket

    def events(
        self,
        topics: Iterable[TopicSpec],
        *,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        last_event_id: int | None = None,
    ) -> EventStream:
        """Subscribe to ``topics`` and iterate over the server's messages::

            async for event in client.events(["vm-status-all"]):
                print(event.type, event.data)

        A topic is a name or a dict such as ``Topics.vm_metrics("vm-1", interval=5)``.
        Reconnects with exponential backoff (unbounded unless ``max_reconnects``) and
        resumes after the last ``eventId`` it delivered.
        """
        return EventStream(
            self._open_socket,
            normalize_topics(topics),
            reconnect=reconnect,
            max_reconnects=max_reconnects,
            reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay,
            last_event_id=last_event_id,
        )

    def console(self, vm_id: str) -> Console:
        """The VM's serial console: ``async with client.console(vm_id) as con: ...``."""
        return Console(self._open_socket, vm_id)

    async def aclose(self) -> None:
        for socket in list(self._sockets):
            await socket.close()
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
