"""RemoteAgent: the HostAgent port over the agent's unix socket (server.py), for API processes.

One `rpc` connection carries every call (by id, many at once) and one `events` connection the
agent's events, fanned out to this process's subscribers. When the agent goes away, calls in
flight fail with HYPERVISOR_UNAVAILABLE, the next call connects again, and the events connection
is tried again every `retry` seconds. (What happened while the agent was away, the services learn
from their own reconciliation.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from pathlib import Path
from typing import Any

from voidvm_server.agent import wire
from voidvm_server.agent.events import EventFanout, Feed
from voidvm_server.agent.port import HostReconnected, ImageRef, VMPlan, VMStats
from voidvm_server.errors import HypervisorUnavailableError

log = logging.getLogger(__name__)


def unreachable() -> HypervisorUnavailableError:
    return HypervisorUnavailableError("The host agent is not reachable")


class _Connection:
    """One `rpc` connection and the calls waiting on it: they fail with it, and only with it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.reader: asyncio.Task[None] | None = None

    @property
    def usable(self) -> bool:
        return not self.writer.is_closing()

    def end(self) -> None:
        self.writer.close()
        waiting, self.waiting = self.waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(unreachable())


class RemoteAgent:
    def __init__(self, path: Path, *, retry: float = 0.5, connect_timeout: float = 5.0) -> None:
        self.path = path
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.accel = "unknown"
        self._fanout = EventFanout()
        self._ids = itertools.count(1)
        self._rpc: _Connection | None = None
        self._events_task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()  # the events connection is up and subscribed
        self._connecting = asyncio.Lock()

    async def connect(self) -> None:
        """Reach the agent (it must be up) and subscribe to its events: once this returns, no
        event is missed while the agent stays up."""
        await self._ensure_rpc()
        if self._events_task is None:
            self._events_task = asyncio.create_task(self._follow_events(), name="agent-events")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._subscribed.wait()
        except TimeoutError:
            raise unreachable() from None

    async def _open(self, hello: dict[str, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection. An agent restarting (`serve` starts it again within a second or two)
        is waited for, up to `connect_timeout`, so the calls of that moment wait rather than fail."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                while True:
                    try:
                        opened = asyncio.open_unix_connection(str(self.path), limit=wire.MAX_LINE)
                        reader, writer = await opened
                        break
                    except (ConnectionRefusedError, FileNotFoundError):
                        await asyncio.sleep(0.1)
        except (OSError, TimeoutError):
            raise unreachable() from None
        writer.write(wire.dumps(hello))
        return reader, writer

    # -- calls ---------------------------------------------------------------------------------
    async def _ensure_rpc(self) -> _Connection:
        async with self._connecting:
            if self._rpc is not None and self._rpc.usable:
                return self._rpc
            reader, writer = await self._open({"stream": "rpc"})
            try:
                async with asyncio.timeout(self.connect_timeout):
                    self.accel = str(wire.loads(await reader.readline())["accel"])
            except (OSError, TimeoutError, ValueError, KeyError):
                writer.close()
                raise unreachable() from None
            connection = self._rpc = _Connection(writer)
            connection.reader = asyncio.create_task(
                self._read_answers(reader, connection), name="agent-answers"
            )
            return connection

    async def _read_answers(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        try:
            while line := await reader.readline():
                answer = wire.loads(line)
                waiter = connection.waiting.pop(int(answer.get("id") or 0), None)
                if waiter is None or waiter.done():
                    continue
                if "error" in answer:
                    waiter.set_exception(wire.unpack_error(answer["error"]))
                else:
                    waiter.set_result(answer.get("result"))
        except (OSError, ValueError):
            pass
        finally:
            connection.end()  # its calls fail; the next call connects again

    async def _call(self, method: str, **params: Any) -> Any:
        connection = await self._ensure_rpc()
        call_id = next(self._ids)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.waiting[call_id] = waiter
        try:
            connection.writer.write(wire.dumps({"id": call_id, "method": method, "params": params}))
            await connection.writer.drain()
        except OSError:
            connection.waiting.pop(call_id, None)
            connection.end()
            raise unreachable() from None
        return await waiter

    # -- events --------------------------------------------------------------------------------
    def subscribe(self) -> Feed:
        return self._fanout.subscribe()

    async def _follow_events(self) -> None:
        """Follow the agent's events for good. After a time without them, HostReconnected tells
        the subscribers that they may have missed some (the services then check again)."""
        heard_before = False
        while True:
            try:
                reader, writer = await self._open({"stream": "events"})
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        if not wire.loads(await reader.readline()).get("ok"):
                            raise ValueError("the agent refused the subscription")
                    self._subscribed.set()
                    if heard_before:
                        log.info("The host agent's events are back")
                        self._fanout.publish(HostReconnected())
                    heard_before = True
                    while line := await reader.readline():
                        self._fanout.publish(wire.unpack_event(wire.loads(line)))
                finally:
                    writer.close()
            except (HypervisorUnavailableError, OSError, TimeoutError, ValueError, KeyError):
                pass
            if self._subscribed.is_set():
                log.warning("Lost the host agent's events; trying again every %g s", self.retry)
                self._subscribed.clear()
            await asyncio.sleep(self.retry)

    # -- the port ------------------------------------------------------------------------------
    async def prepare_disk(self, vm_id: str, image: ImageRef, size_gb: int) -> None:
        await self._call("prepare_disk", vm_id=vm_id, image=wire.pack_image(image), size_gb=size_gb)

    async def has_disk(self, vm_id: str) -> bool:
        return bool(await self._call("has_disk", vm_id=vm_id))

    async def grow_disk(self, vm_id: str, size_gb: int) -> None:
        await self._call("grow_disk", vm_id=vm_id, size_gb=size_gb)

    async def disk_allocated_bytes(self, vm_id: str) -> int | None:
        answer = await self._call("disk_allocated_bytes", vm_id=vm_id)
        return int(answer) if answer is not None else None

    async def destroy(self, vm_id: str) -> None:
        await self._call("destroy", vm_id=vm_id)

    async def start(self, plan: VMPlan) -> int:
        return int(await self._call("start", plan=wire.pack_plan(plan)))

    async def attach(self, vm_id: str) -> int | None:
        answer = await self._call("attach", vm_id=vm_id)
        return int(answer) if answer is not None else None

    async def known_vms(self) -> list[str]:
        return [str(vm_id) for vm_id in await self._call("known_vms")]

    async def is_running(self, vm_id: str) -> bool:
        return bool(await self._call("is_running", vm_id=vm_id))

    async def powerdown(self, vm_id: str) -> None:
        await self._call("powerdown", vm_id=vm_id)

    async def kill(self, vm_id: str) -> None:
        await self._call("kill", vm_id=vm_id)

    async def wait_exit(self, vm_id: str, timeout: float) -> bool:
        return bool(await self._call("wait_exit", vm_id=vm_id, timeout=timeout))

    async def pause(self, vm_id: str) -> None:
        await self._call("pause", vm_id=vm_id)

    async def resume(self, vm_id: str) -> None:
        await self._call("resume", vm_id=vm_id)

    async def reset(self, vm_id: str) -> None:
        await self._call("reset", vm_id=vm_id)

    async def query_status(self, vm_id: str) -> str:
        return str(await self._call("query_status", vm_id=vm_id))

    async def stats(self, vm_id: str) -> VMStats:
        return wire.unpack_stats(await self._call("stats", vm_id=vm_id))

    async def console_recent(self, vm_id: str) -> tuple[bytes, int]:
        answer = await self._call("console_recent", vm_id=vm_id)
        return wire.unpack_bytes(answer["data"]), int(answer["end"])

    async def console_write(self, vm_id: str, data: bytes) -> None:
        await self._call("console_write", vm_id=vm_id, data=wire.pack_bytes(data))

    async def console_saved(self, vm_id: str, limit: int) -> tuple[bytes, int]:
        answer = await self._call("console_saved", vm_id=vm_id, limit=limit)
        return wire.unpack_bytes(answer["data"]), int(answer["size"])

    async def open_vnc(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self._open({"stream": "vnc", "vm_id": vm_id})
        try:
            async with asyncio.timeout(self.connect_timeout):
                answer = wire.loads(await reader.readline())
        except (OSError, TimeoutError, ValueError):
            writer.close()
            raise unreachable() from None
        if "error" in answer:
            writer.close()
            raise wire.unpack_error(answer["error"])
        return reader, writer

    async def close(self) -> None:
        connection, self._rpc = self._rpc, None
        tasks = [self._events_task, connection.reader if connection else None]
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._events_task = None
        if connection is not None:
            connection.end()
