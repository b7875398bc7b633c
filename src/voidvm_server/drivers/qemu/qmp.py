"""A thin QMP connection with a timeout around every call, on the QEMU project's qemu.qmp."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError, Message, QMPClient, QMPError, Runstate
from qemu.qmp.protocol import ConnectError
from qemu.qmp.qmp_client import NegotiationError

from voidvm_server.errors import DriverError, HypervisorTimeoutError

log = logging.getLogger(__name__)
EventHandler = Callable[[str, dict[str, Any]], None]  # (event name, its data)


def _data(event: Message) -> dict[str, Any]:
    data = event.get("data")
    return dict(data) if isinstance(data, dict) else {}


class QMPConnection:
    def __init__(self, name: str, timeout: float) -> None:
        self._client = QMPClient(name)
        self._timeout = timeout
        self._events_task: asyncio.Task[None] | None = None
        self._on_event: EventHandler = lambda name, data: None

    async def connect(self, socket_path: Path, on_event: EventHandler) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    await self._client.connect(str(socket_path))
                except ConnectError as exc:
                    if not isinstance(exc.exc, NegotiationError):
                        raise
                    # Seen twice in the suite's runs under load: QEMU's first answer to
                    # qmp_capabilities was not its reply. The monitor takes a new client at once.
                    log.warning("QMP negotiation with %s failed; connecting again", self._client.name)
                    await self._client.disconnect()
                    await self._client.connect(str(socket_path))
        except TimeoutError as exc:
            raise HypervisorTimeoutError("QEMU did not answer on its control socket") from exc
        except (QMPError, OSError) as exc:
            raise DriverError("Could not connect to QEMU's control socket") from exc
        self._on_event = on_event
        self._events_task = asyncio.create_task(self._pump(on_event), name=f"qmp-events-{self._client.name}")

    async def _pump(self, on_event: EventHandler) -> None:
        with contextlib.suppress(QMPError):
            async for event in self._client.events:
                on_event(str(event["event"]), _data(event))

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._client.execute(command, arguments)
        except TimeoutError as exc:
            raise HypervisorTimeoutError(
                f"QEMU did not answer '{command}' within {self._timeout:g} s"
            ) from exc
        except ExecuteError as exc:
            raise DriverError(f"QEMU refused '{command}'", details=str(exc)) from exc
        except (QMPError, OSError) as exc:
            raise DriverError(f"Lost QEMU's control socket during '{command}'") from exc

    async def drain_events(self, timeout: float) -> None:
        """Once QEMU has exited: hand every event it sent to `on_event` before returning.

        The process exit (seen on a pidfd) and the last events (read from the socket) arrive
        independently. The reader reaches EOF only after it has queued every event before it;
        whatever the pump has not taken yet is then delivered here.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._client.runstate is Runstate.RUNNING:
                    await self._client.runstate_changed()
        await self._stop_pump()
        for event in self._client.events.clear():
            self._on_event(str(event["event"]), _data(event))

    async def _stop_pump(self) -> None:
        if self._events_task is not None:
            self._events_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events_task
            self._events_task = None

    async def close(self) -> None:
        await self._stop_pump()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self._client.disconnect()
