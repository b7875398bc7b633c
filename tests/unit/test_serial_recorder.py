"""SerialRecorder against a stand-in for QEMU's serial socket (a unix socket server), no guest.

What it must do: save everything to the bounded log in order, keep the recent output for replay,
throttle the guest (not buffer) when the log is slow, and bound the input the guest has not taken.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from voidvm_server.drivers.console_log import RotatingLog, read_tail
from voidvm_server.drivers.qemu.console import READ_CHUNK, SerialRecorder
from voidvm_server.errors import DriverError

CAP = 64 * 1024
TIMEOUT = 10.0


class FakeQemuSerial:
    """QEMU's end: one client, output pushed as fast as the socket takes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.client: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, str(self.path))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.client.set_result((reader, writer))

    async def writer(self) -> asyncio.StreamWriter:
        async with asyncio.timeout(TIMEOUT):
            return (await self.client)[1]

    async def close(self) -> None:
        if self.client.done():
            self.client.result()[1].close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Viewers:
    def __init__(self) -> None:
        self.received = bytearray()
        self.grew = asyncio.Event()

    def __call__(self, data: bytes) -> None:
        self.received += data
        self.grew.set()

    async def until(self, size: int) -> None:
        async with asyncio.timeout(TIMEOUT):
            while len(self.received) < size:
                self.grew.clear()
                await self.grew.wait()


class GatedLog(RotatingLog):
    """A log whose writes wait until the test opens the gate: a slow disk."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(path, max_bytes)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def append(self, data: bytes) -> None:
        self.entered.set()
        self.gate.wait(TIMEOUT)
        super().append(data)


@asynccontextmanager
async def recorder(
    tmp_path: Path, saved: RotatingLog, replay_from: Path | None = None, timeout: float = TIMEOUT
) -> AsyncIterator[tuple[SerialRecorder, FakeQemuSerial, Viewers]]:
    qemu = FakeQemuSerial(tmp_path / "serial.sock")
    await qemu.start()
    viewers = Viewers()
    console = SerialRecorder(
        "vm-test", qemu.path, saved, replay_bytes=1024, on_output=viewers, timeout=timeout
    )
    await console.open(replay_from)
    try:
        yield console, qemu, viewers
    finally:
        await console.close()
        await qemu.close()


def numbered(n: int) -> bytes:
    return b"".join(b"%07d\n" % i for i in range(n))


async def test_output_is_saved_in_order_within_the_cap_and_kept_for_replay(tmp_path: Path) -> None:
    log_path = tmp_path / "console.log"
    output = numbered(60_000)  # 480 KB through a 64 KiB log
    async with recorder(tmp_path, RotatingLog(log_path, CAP)) as (console, qemu, viewers):
        writer = await qemu.writer()
        writer.write(output)
        await writer.drain()
        await viewers.until(len(output))
        assert bytes(viewers.received) == output
        assert console.recent() == output[-1024:]
        writer.close()  # QEMU exits: what it wrote before is still saved, to the last byte
        await console.finish(TIMEOUT)
    kept, size = read_tail(log_path, 4 * CAP)
    assert size == len(kept) <= 2 * CAP and output.endswith(kept) and len(kept) > CAP


async def test_a_slow_log_throttles_the_guest_instead_of_buffering(tmp_path: Path) -> None:
    saved = GatedLog(tmp_path / "console.log", CAP)
    output = numbered(500_000)  # 4 MB: far more than the socket buffers hold
    async with recorder(tmp_path, saved) as (console, qemu, viewers):
        writer = await qemu.writer()
        writer.write(output)
        await asyncio.to_thread(saved.entered.wait, TIMEOUT)  # the first chunk is being saved
        # While that write hangs, the recorder reads nothing more: QEMU cannot get rid of its
        # output (here: the transport keeps it), which is what stalls the guest's UART.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(writer.drain(), 0.5)
        assert len(viewers.received) <= READ_CHUNK
        assert writer.transport.get_write_buffer_size() > 0
        saved.gate.set()
        await writer.drain()
        await viewers.until(len(output))
        assert bytes(viewers.received) == output  # slowed down, nothing dropped
        writer.close()
        await console.finish(TIMEOUT)
        assert output.endswith((tmp_path / "console.log").read_bytes())


async def test_a_reattach_replays_the_end_of_the_saved_log(tmp_path: Path) -> None:
    log_path = tmp_path / "console.log"
    log_path.write_bytes(b"y" * 5000 + b"before the server restarted")
    async with recorder(tmp_path, RotatingLog(log_path, CAP), replay_from=log_path) as (
        console,
        qemu,
        viewers,
    ):
        assert console.recent() == (b"y" * 5000 + b"before the server restarted")[-1024:]
        writer = await qemu.writer()
        writer.write(b" and after")
        await viewers.until(len(b" and after"))
        assert console.recent().endswith(b"before the server restarted and after")
        writer.close()
        await console.finish(TIMEOUT)
    assert log_path.read_bytes().endswith(b"restarted and after")


async def test_input_reaches_the_guest_and_a_guest_that_takes_none_is_refused_more(tmp_path: Path) -> None:
    async with recorder(tmp_path, RotatingLog(tmp_path / "console.log", CAP), timeout=0.5) as (
        console,
        qemu,
        _viewers,
    ):
        await console.write(b"echo hi\n")
        reader, _writer = await qemu.client
        async with asyncio.timeout(TIMEOUT):
            assert await reader.readexactly(8) == b"echo hi\n"
        # Now the guest reads nothing: input piles up to a bound, then is refused.
        sent = 0
        with pytest.raises(DriverError) as refused:
            for _ in range(10_000):
                await console.write(b"k" * 16384)
                sent += 16384
        assert refused.value.message == "The VM's serial console is not accepting input"
        assert sent <= 2 * 1024**2  # socket buffers and the bounded backlog, no more


async def test_a_console_that_cannot_be_reached_is_a_driver_error(tmp_path: Path) -> None:
    console = SerialRecorder(
        "vm-test",
        tmp_path / "missing.sock",
        None,
        replay_bytes=1024,
        on_output=lambda data: None,
        timeout=1,
    )
    with pytest.raises(DriverError):
        await console.open(None)
    with pytest.raises(DriverError):
        await console.write(b"x")
