"""Live events over the WebSocket, with reconnect and resume.

:class:`EventStream` subscribes to topics and yields every server message except
``pong``. When the connection drops it reconnects with exponential backoff and
re-subscribes with ``lastEventId`` set to the last ``data.eventId`` it delivered, so the
server can replay what was missed; replayed events it already delivered are skipped.
An ``error`` message is raised as the matching :class:`~voidvm.VoidVMError`.

States: ``idle`` (no socket yet or between reconnects) → ``open`` → ``closed`` (by
:meth:`EventStream.aclose` or a non-retryable error; iteration then ends).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from ._errors import TransportError
from ._ws import Message, Socket, error_from_message

__all__ = ["Event", "EventStream", "Topic", "TopicSpec", "Topics", "normalize_topics"]

logger = logging.getLogger(__name__)

#: Server messages are delivered as events.
Event = Message

#: A topic name (``"vm-status-all"``) or a full subscription (``{"topic": ..., "vmId": ...}``).
TopicSpec = str | Mapping[str, Any]
Topic = dict[str, Any]


class Topics:
    """Builders for the subscription payloads the server understands."""

    @staticmethod
    def vm_status(vm_id: str) -> Topic:
        return {"topic": "vm-status", "vmId": vm_id}

    @staticmethod
    def vm_status_all() -> Topic:
        return {"topic": "vm-status-all"}

    @staticmethod
    def vm_metrics(vm_id: str, interval: float | None = None) -> Topic:
        return _without_none({"topic": "vm-metrics", "vmId": vm_id, "interval": interval})

    @staticmethod
    def operations() -> Topic:
        """Every change of the caller's operations (an admin's: everyone's), as ``operation``
        events; ``event.operation`` is the :class:`~voidvm.Operation` as it now stands."""
        return {"topic": "operations"}

    @staticmethod
    def system_monitor(interval: float | None = None) -> Topic:
        return _without_none({"topic": "system-monitor", "interval": interval})


def _without_none(values: dict[str, Any]) -> Topic:
    return {key: value for key, value in values.items() if value is not None}


def normalize_topics(topics: Iterable[TopicSpec]) -> list[Topic]:
    result: list[Topic] = []
    for spec in topics:
        topic = {"topic": spec} if isinstance(spec, str) else dict(spec)
        if not isinstance(topic.get("topic"), str):
            raise ValueError(f"a subscription needs a 'topic' name: {spec!r}")
        result.append(topic)
    if not result:
        raise ValueError("events() needs at least one topic")
    return result


class _State(enum.Enum):
    IDLE = "idle"
    OPEN = "open"
    CLOSED = "closed"


class EventStream:
    """``async for event in stream`` (also an async context manager that closes it)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Socket]],
        topics: list[Topic],
        *,
        reconnect: bool = True,
        max_reconnects: int | None = None,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        last_event_id: int | None = None,
    ) -> None:
        self._connect = connect
        self._topics = topics
        self._reconnect = reconnect
        self._max_reconnects = max_reconnects
        self._delay = reconnect_delay
        self._max_delay = max_reconnect_delay
        self._socket: Socket | None = None
        self._state = _State.IDLE
        self._failures = 0
        #: The last ``data.eventId`` delivered; sent as ``lastEventId`` on reconnect.
        self.last_event_id = last_event_id
        #: How many times the stream reconnected after a drop.
        self.reconnects = 0

    @property
    def state(self) -> str:
        return self._state.value

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._state is _State.CLOSED:
                raise StopAsyncIteration
            try:
                socket = self._socket or await self._open()
                event = self._accept(await socket.recv())
            except TransportError as exc:
                await self._drop()
                await self._backoff(exc)
                continue
            except BaseException:
                await self.aclose()
                raise
            if event is not None:
                return event

    def _accept(self, message: Message) -> Event | None:
        """Filter one message: None to skip it; raises for ``error``."""
        self._failures = 0
        if message.type == "pong":
            return None
        if message.type == "error":
            raise error_from_message(message)
        event_id = message.event_id
        if event_id is not None:
            if self.last_event_id is not None and event_id <= self.last_event_id:
                return None  # replayed after a reconnect and already delivered
            self.last_event_id = event_id
        return message

    async def _open(self) -> Socket:
        socket = await self._connect()
        self._socket = socket
        self._state = _State.OPEN
        for topic in self._topics:
            data = dict(topic)
            if self.last_event_id is not None:
                data["lastEventId"] = self.last_event_id
            await socket.send("subscribe", data)
        return socket

    async def _drop(self) -> None:
        socket, self._socket = self._socket, None
        if self._state is not _State.CLOSED:
            self._state = _State.IDLE
        if socket is not None:
            try:
                await socket.close()
            except Exception:  # already broken; nothing more to release
                logger.debug("closing a broken event socket failed", exc_info=True)

    async def _backoff(self, exc: TransportError) -> None:
        limit = self._max_reconnects
        if not self._reconnect or (limit is not None and self._failures >= limit):
            await self.aclose()
            raise exc
        delay = min(self._delay * (2**self._failures), self._max_delay)
        delay *= 1 + random.random() / 4  # spread reconnecting clients apart
        self._failures += 1
        self.reconnects += 1
        logger.info("event stream lost (%s); reconnecting in %.2fs", exc.message, delay)
        await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close the socket; iteration ends."""
        self._state = _State.CLOSED
        await self._drop()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
