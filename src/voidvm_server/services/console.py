"""ConsoleHub: one connection per running VM's serial socket, fanned out to every viewer.

QEMU's socket chardev serves a single client, so viewers never talk to it directly: the hub holds
the one connection (opened when the first viewer attaches, closed when the last one leaves),
copies each chunk of guest output to every viewer and writes viewers' input to the guest. QEMU
itself appends everything to `console.log`, so the hub keeps no log of its own, only a small ring
of recent output that it replays to each newly attached viewer.

Viewers stay attached across a stop or restart: when the QEMU process ends the connection drops,
and the hub reconnects when the VM's `running` event arrives (or on the next input). On every
reconnect viewers first get what QEMU logged while the hub was away (bounded by `replay_bytes`).

Replay precision: the ring is seeded from the tail of `console.log` when the hub connects. QEMU
accepts the connection asynchronously, so output written in that instant may appear twice (in the
tail and live) — never lost after the first byte of live output.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from voidvm_server.drivers.base import Driver
from voidvm_server.errors import DriverError, InvalidStateError
from voidvm_server.events.bus import Event, EventBus

log = logging.getLogger(__name__)
READ_CHUNK = 64 * 1024


class ConsoleViewer(Protocol):
    def on_output(self, data: bytes) -> None:
        """Guest output; must not block (queue it)."""

    def on_closed(self, code: str, reason: str) -> None:
        """The console is gone for good: `VM_NOT_FOUND` (deleted) or `SERVICE_UNAVAILABLE` (the
        server is stopping)."""


LogMark = tuple[int, int]  # (inode, size) of console.log when the hub last disconnected


def _log_mark(path: Path) -> LogMark | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size


def _read_missed(path: Path, mark: LogMark | None, limit: int) -> bytes:
    """What QEMU logged since `mark` (everything, for a new log), at most the last `limit` bytes."""
    try:
        with path.open("rb") as handle:
            start = 0
            if mark is not None and mark[0] == _fileno_inode(handle.fileno()):
                start = mark[1]
            end = handle.seek(0, 2)
            handle.seek(max(start, end - limit))
            return handle.read(limit)
    except FileNotFoundError:
        return b""


def _fileno_inode(fd: int) -> int:
    return os.fstat(fd).st_ino


class SerialSession:
    """The hub's connection to one VM's serial socket, and the viewers attached to it."""

    def __init__(self, vm_id: str, driver: Driver, replay_bytes: int, timeout: float) -> None:
        self.vm_id = vm_id
        self.driver = driver
        self.replay_bytes = replay_bytes
        self.timeout = timeout
        self.viewers: list[ConsoleViewer] = []
        self._ring = bytearray()
        self._mark: LogMark | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def connect(self) -> None:
        async with self._lock:
            if self._writer is not None:
                return
            if not self.driver.is_running(self.vm_id):
                raise InvalidStateError("The VM is not running", code="VM_NOT_RUNNING", current="stopped")
            path = self.driver.serial_socket(self.vm_id)
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_unix_connection(str(path))
            except (OSError, TimeoutError) as exc:
                raise DriverError("The VM's serial console is not reachable") from exc
            self._writer = writer
            missed = await asyncio.to_thread(
                _read_missed, self.driver.console_log(self.vm_id), self._mark, self.replay_bytes
            )
            self._fan_out(missed)
            self._pump = asyncio.get_running_loop().create_task(self._read(reader, writer))
            log.debug("Console of %s connected", self.vm_id)

    def attach(self, viewer: ConsoleViewer) -> bytes:
        """Register a viewer; returns the recent output to show it first (atomic with registering)."""
        self.viewers.append(viewer)
        return bytes(self._ring)

    def detach(self, viewer: ConsoleViewer) -> None:
        with contextlib.suppress(ValueError):
            self.viewers.remove(viewer)

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            await self.connect()
        writer = self._writer
        assert writer is not None
        try:
            writer.write(data)
            async with asyncio.timeout(self.timeout):
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            raise DriverError("The VM's serial console is not accepting input") from exc

    def _fan_out(self, data: bytes) -> None:
        if not data:
            return
        self._ring += data
        if len(self._ring) > self.replay_bytes:
            del self._ring[: len(self._ring) - self.replay_bytes]
        for viewer in list(self.viewers):
            viewer.on_output(data)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(READ_CHUNK):
                self._fan_out(data)
        except OSError as exc:
            log.debug("Console of %s: %s", self.vm_id, exc)
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            self._mark = _log_mark(self.driver.console_log(self.vm_id))
            log.debug("Console of %s disconnected", self.vm_id)

    async def disconnect(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)


class ConsoleHub:
    def __init__(
        self, driver: Driver, bus: EventBus, *, replay_bytes: int = 4096, timeout: float = 5.0
    ) -> None:
        self.driver = driver
        self.bus = bus
        self.replay_bytes = replay_bytes
        self.timeout = timeout
        self._sessions: dict[str, SerialSession] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # per VM: attach, detach and drop in turn
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unlisten: Callable[[], None] = lambda: None

    def start(self) -> None:
        self._unlisten = self.bus.listen(self._on_event)

    def _lock(self, vm_id: str) -> asyncio.Lock:
        return self._locks.setdefault(vm_id, asyncio.Lock())

    async def attach(self, vm_id: str, viewer: ConsoleViewer) -> bytes:
        """Attach a viewer (connecting to the guest if needed); returns the output to replay."""
        async with self._lock(vm_id):
            session = self._sessions.get(vm_id)
            if session is None:
                session = SerialSession(vm_id, self.driver, self.replay_bytes, self.timeout)
                self._sessions[vm_id] = session
            try:
                await session.connect()
            except BaseException:
                if not session.viewers:
                    await self._drop(session)
                raise
            return session.attach(viewer)

    async def detach(self, vm_id: str, viewer: ConsoleViewer) -> None:
        """Detach a viewer; the last one out closes the connection. The VM is left untouched."""
        async with self._lock(vm_id):
            session = self._sessions.get(vm_id)
            if session is None:
                return
            session.detach(viewer)
            if not session.viewers:
                await self._drop(session)

    async def write(self, vm_id: str, data: bytes) -> None:
        session = self._sessions.get(vm_id)
        if session is None:
            raise InvalidStateError(
                "Attach to the console first", code="CONSOLE_NOT_ATTACHED", current="detached"
            )
        await session.write(data)

    def viewer_count(self, vm_id: str) -> int:
        session = self._sessions.get(vm_id)
        return len(session.viewers) if session else 0

    def is_connected(self, vm_id: str) -> bool:
        session = self._sessions.get(vm_id)
        return session is not None and session.connected

    async def _drop(self, session: SerialSession) -> None:
        if self._sessions.get(session.vm_id) is session:
            del self._sessions[session.vm_id]
        await session.disconnect()

    def _on_event(self, event: Event) -> None:
        if event.kind != "vm-status" or event.vm_id not in self._sessions:
            return
        session = self._sessions[event.vm_id]
        status = event.data.get("status")
        if status == "running" and not session.connected:
            self._spawn(self._reconnect(session))
        elif status == "deleted":
            for viewer in list(session.viewers):
                viewer.on_closed("VM_NOT_FOUND", "the VM was deleted")
            self._spawn(self._forget(session))

    async def _forget(self, session: SerialSession) -> None:
        async with self._lock(session.vm_id):
            await self._drop(session)
        self._locks.pop(session.vm_id, None)

    async def _reconnect(self, session: SerialSession) -> None:
        try:
            await session.connect()
        except (DriverError, InvalidStateError) as exc:
            log.info("Console of %s: could not reconnect (%s)", session.vm_id, exc.message)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._unlisten()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in list(self._sessions.values()):
            for viewer in list(session.viewers):
                viewer.on_closed("SERVICE_UNAVAILABLE", "the server is shutting down")
            await self._drop(session)
