"""The agent's events, handed to every subscriber's own queue."""

from __future__ import annotations

import asyncio

from voidvm_server.agent.port import AgentEvent


class Feed:
    def __init__(self, fanout: EventFanout) -> None:
        self._fanout = fanout
        self._queue: asyncio.Queue[AgentEvent] = asyncio.Queue()

    def put(self, event: AgentEvent) -> None:
        self._queue.put_nowait(event)

    async def next(self) -> AgentEvent:
        return await self._queue.get()

    def close(self) -> None:
        self._fanout.drop(self)

    @property
    def backlog(self) -> int:
        """Events published to this feed and not read yet."""
        return self._queue.qsize()


class EventFanout:
    """Publishing never blocks: a subscriber's queue is unbounded, and each reads its own in
    a task of its own. Serial output is its biggest load, bounded by what guests print."""

    def __init__(self) -> None:
        self._feeds: list[Feed] = []

    def subscribe(self) -> Feed:
        feed = Feed(self)
        self._feeds.append(feed)
        return feed

    def drop(self, feed: Feed) -> None:
        if feed in self._feeds:
            self._feeds.remove(feed)

    def publish(self, event: AgentEvent) -> None:
        for feed in list(self._feeds):
            feed.put(event)
