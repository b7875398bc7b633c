"""AgentServer: the HostAgent port served on a private unix socket (0600), for API processes.

Each connection says in its first line what it is for (wire.py). Calls on an `rpc` connection run
at once, side by side, and answer in the order they finish, by id; a call whose caller went away
still runs to its end (a half-done start would leave more behind than a finished one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from voidvm_server.agent import wire
from voidvm_server.agent.local import LocalAgent
from voidvm_server.errors import DriverError, VoidVMError

log = logging.getLogger(__name__)
PIPE_CHUNK = 64 * 1024
CLOSE_SECONDS = 10.0  # how long a stopping agent lets calls under way finish
# Events a subscriber may fall behind by before it is cut off: it connects again and the API
# re-checks its running VMs (HostReconnected), rather than the agent holding a stalled API's
# console output without bound.
MAX_BACKLOG = 10_000


class AgentServer:
    def __init__(self, agent: LocalAgent, path: Path) -> None:
        self.agent = agent
        self.path = path
        self._server: asyncio.Server | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)  # born 0600, so no moment where others could connect; bound
        try:  # without an await in between, as the umask is the whole process's
            listener.bind(str(self.path))
        finally:
            os.umask(previous)
        listener.listen(128)
        self._server = await asyncio.start_unix_server(self._serve, sock=listener, limit=wire.MAX_LINE)

    async def close(self) -> None:
        """Stop taking calls; answer those under way (for up to CLOSE_SECONDS), then hang up."""
        if self._server is not None:
            self._server.close()
        if self._calls:
            await asyncio.wait(set(self._calls), timeout=CLOSE_SECONDS)
        for writer in list(self._connections):  # callers see the agent go, as on its exit
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            hello = wire.loads(await reader.readline())
            stream = hello.get("stream")
            if stream == "rpc":
                await self._rpc(reader, writer)
            elif stream == "events":
                await self._events(reader, writer)
            elif stream == "vnc":
                await self._vnc(str(hello.get("vm_id")), reader, writer)
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # the caller went away, or spoke nonsense: nothing of ours to clean up
        except asyncio.CancelledError:
            # The agent is stopping with this connection open. The handler ends rather than
            # ends cancelled: asyncio's stream server (3.11) would log a cancelled one as an error.
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    # -- calls ---------------------------------------------------------------------------------
    async def _rpc(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writing = asyncio.Lock()
        writer.write(wire.dumps({"accel": self.agent.accel}))
        await writer.drain()
        while line := await reader.readline():
            task = asyncio.create_task(self._answer(wire.loads(line), writer, writing))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _answer(
        self, request: dict[str, Any], writer: asyncio.StreamWriter, writing: asyncio.Lock
    ) -> None:
        reply: dict[str, Any] = {"id": request.get("id")}
        try:
            reply["result"] = await self._call(str(request.get("method")), request.get("params") or {})
        except VoidVMError as exc:
            reply["error"] = wire.pack_error(exc)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("A malformed call to the host agent: %s", exc)
            reply["error"] = wire.pack_error(DriverError("The host agent could not read the call"))
        except Exception:
            log.exception("A call to the host agent failed")
            reply["error"] = wire.pack_error(DriverError("The host agent failed"))
        with contextlib.suppress(ConnectionError):
            async with writing:
                writer.write(wire.dumps(reply))
                await writer.drain()

    async def _call(self, method: str, p: dict[str, Any]) -> Any:
        a = self.agent
        vm_id = str(p.get("vm_id", ""))
        if method == "prepare_disk":
            return await a.prepare_disk(vm_id, wire.unpack_image(p["image"]), int(p["size_gb"]))
        if method == "grow_disk":
            return await a.grow_disk(vm_id, int(p["size_gb"]))
        if method == "start":
            return await a.start(wire.unpack_plan(p["plan"]))
        if method == "wait_exit":
            return await a.wait_exit(vm_id, float(p["timeout"]))
        if method == "stats":
            return wire.pack_stats(await a.stats(vm_id))
        if method == "console_recent":
            data, end = await a.console_recent(vm_id)
            return {"data": wire.pack_bytes(data), "end": end}
        if method == "console_write":
            return await a.console_write(vm_id, wire.unpack_bytes(p["data"]))
        if method == "console_saved":
            data, size = await a.console_saved(vm_id, int(p["limit"]))
            return {"data": wire.pack_bytes(data), "size": size}
        if method == "known_vms":
            return await a.known_vms()
        if method in _BY_VM:
            return await getattr(a, method)(vm_id)
        raise ValueError(f"no such call: {method}")

    # -- events and the screen -----------------------------------------------------------------
    async def _events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        feed = self.agent.subscribe()
        writer.write(wire.dumps({"ok": True}))  # subscribed: nothing from here on is missed
        await writer.drain()
        gone = asyncio.create_task(reader.read())  # EOF: the subscriber went away
        try:
            while not gone.done():
                if feed.backlog > MAX_BACKLOG:
                    log.warning("An events subscriber fell %d events behind; cutting it off", feed.backlog)
                    break
                waiting = asyncio.create_task(feed.next())
                await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():
                    waiting.cancel()
                    break
                writer.write(wire.dumps(wire.pack_event(waiting.result())))
                await writer.drain()
        finally:
            feed.close()
            gone.cancel()

    async def _vnc(self, vm_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            screen_reader, screen_writer = await self.agent.open_vnc(vm_id)
        except (VoidVMError, ValueError) as exc:
            error = exc if isinstance(exc, VoidVMError) else DriverError("No such VM")
            writer.write(wire.dumps({"error": wire.pack_error(error)}))
            await writer.drain()
            return
        writer.write(wire.dumps({"ok": True}))
        try:
            await pipe_both_ways(reader, writer, screen_reader, screen_writer)
        finally:
            screen_writer.close()


# Calls that take only a VM id, answered with what the agent returns.
_BY_VM = frozenset({"has_disk", "disk_allocated_bytes", "destroy", "attach", "is_running", "powerdown",
                    "kill", "pause", "resume", "reset", "query_status"})  # fmt: skip


async def pipe_both_ways(
    a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter,
) -> None:  # fmt: skip
    """Copy bytes a→b and b→a until either side ends."""

    async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(PIPE_CHUNK):
            sink.write(data)
            await sink.drain()

    tasks = {asyncio.create_task(copy(a_reader, b_writer)), asyncio.create_task(copy(b_reader, a_writer))}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
