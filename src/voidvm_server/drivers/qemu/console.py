"""SerialRecorder: VoidVM's one connection to a running VM's serial socket.

It is opened before the guest runs (VoidVM starts QEMU with `-S` and continues it only once the
console is recorded, so not even the first boot line is missed) and held until QEMU exits, watched
or not. Every chunk of output is kept for replay to new viewers, handed to the console hub and
saved to the VM's bounded, rotated console log. QEMU serves one client, so while the server runs
nothing else talks to the socket.

Backpressure: the next chunk is read only once the previous one is saved. When the log cannot
keep up, the socket fills, QEMU's UART stops taking bytes and the guest's writes wait; the guest is
slowed down and nothing is buffered without bound. While nothing is connected (the server is
down) QEMU discards the serial output: it is not saved, and it cannot fill the host's disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from voidvm_server.drivers.console_log import RotatingLog, read_tail
from voidvm_server.errors import DriverError

log = logging.getLogger(__name__)
READ_CHUNK = 64 * 1024
INPUT_BACKLOG_BYTES = 256 * 1024  # input the guest has not taken yet; more is refused


class SerialRecorder:
    def __init__(
        self,
        vm_id: str,
        socket_path: Path,
        saved: RotatingLog | None,
        *,
        replay_bytes: int,
        on_output: Callable[[bytes], None],
        timeout: float,
    ) -> None:
        """`saved` is None when QEMU writes the log itself (a VM started by an older VoidVM)."""
        self.vm_id = vm_id
        self.socket_path = socket_path
        self.saved = saved
        self.replay_bytes = replay_bytes
        self._on_output = on_output
        self._timeout = timeout
        self._recent = bytearray()
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._save_failing = False

    async def open(self, replay_from: Path | None) -> None:
        """Connect. `replay_from`: the log to take the recent output from (a re-attach after a
        server restart); None for a fresh QEMU, which has printed nothing yet."""
        try:
            async with asyncio.timeout(self._timeout):
                reader, self._writer = await asyncio.open_unix_connection(str(self.socket_path))
        except (OSError, TimeoutError) as exc:
            raise DriverError("The VM's serial console is not reachable") from exc
        if replay_from is not None:
            tail, _ = await asyncio.to_thread(read_tail, replay_from, self.replay_bytes)
            self._recent[:] = tail
        if self.saved is not None:
            try:
                await asyncio.to_thread(self.saved.open)
            except OSError as exc:  # a full disk: the console still works, unsaved
                log.warning("Console of %s: no log (%s)", self.vm_id, exc.strerror)
        self._pump = asyncio.get_running_loop().create_task(self._record(reader), name=f"serial-{self.vm_id}")

    def recent(self) -> bytes:
        return bytes(self._recent)

    async def write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise DriverError("The VM's serial console is not reachable")
        if writer.transport.get_write_buffer_size() > INPUT_BACKLOG_BYTES:
            raise DriverError("The VM's serial console is not accepting input")
        try:
            writer.write(data)
            async with asyncio.timeout(self._timeout):
                await writer.drain()
        except (OSError, TimeoutError) as exc:
            raise DriverError("The VM's serial console is not accepting input") from exc

    async def _record(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(READ_CHUNK):
                self._recent += data
                del self._recent[: max(0, len(self._recent) - self.replay_bytes)]
                try:
                    self._on_output(data)
                except Exception:  # a viewer's bug must not stop the recording
                    log.exception("Console of %s: handing output to the viewers failed", self.vm_id)
                await self._save(data)
        except OSError as exc:
            log.debug("Console of %s: %s", self.vm_id, exc)

    async def _save(self, data: bytes) -> None:
        if self.saved is None:
            return
        try:
            await asyncio.to_thread(self.saved.append, data)
        except OSError as exc:
            if not self._save_failing:
                log.warning("Console of %s: output not saved (%s)", self.vm_id, exc.strerror)
            self._save_failing = True
        else:
            self._save_failing = False

    async def finish(self, timeout: float) -> None:
        """QEMU has exited: save what it wrote before it did (read up to EOF), then close."""
        try:
            if self._pump is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(self._pump)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop recording now (the server is stopping; the VM runs on)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if self.saved is not None:
            await asyncio.to_thread(self.saved.close)
