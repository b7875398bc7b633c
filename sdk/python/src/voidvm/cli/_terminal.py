"""``voidvm vm console``: the local terminal wired to a VM's serial console.

Keystrokes go to the VM as typed (raw mode when stdin is a terminal); ``Ctrl-]``
detaches, like telnet and ``virsh console``. Output is written to stdout as it arrives.
Both pumps are tasks owned by :func:`run_console`, which stops them when either ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import BinaryIO

from .._client import AsyncVoidVMClient
from .._console import Console

__all__ = ["DETACH_KEY", "run_console", "split_at_detach"]

#: Ctrl-] (group separator), the detach key.
DETACH_KEY = b"\x1d"
_READ_SIZE = 4096


def split_at_detach(data: bytes) -> tuple[bytes, bool]:
    """Cut keyboard input at the detach key: ``(bytes to send, detach?)``."""
    index = data.find(DETACH_KEY)
    if index < 0:
        return data, False
    return data[:index], True


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Put a terminal in raw mode and restore it afterwards; no-op for pipes."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _pump_input(console: Console, fd: int) -> None:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            chunks.put_nowait(os.read(fd, _READ_SIZE))
        except OSError:
            chunks.put_nowait(b"")

    loop.add_reader(fd, readable)
    try:
        while True:
            data = await chunks.get()
            if not data:
                return  # end of input
            data, detach = split_at_detach(data)
            if data:
                await console.write(data.decode("utf-8", errors="replace"))
            if detach:
                return
    finally:
        loop.remove_reader(fd)


async def _pump_output(console: Console, stdout: BinaryIO) -> None:
    while True:
        text = await console.read()
        stdout.write(text.encode("utf-8", errors="replace"))
        stdout.flush()


async def _send_size(console: Console, fd: int) -> None:
    with contextlib.suppress(OSError):
        size = os.get_terminal_size(fd)
        await console.resize(size.columns, size.lines)


async def run_console(
    client: AsyncVoidVMClient, vm_id: str, stdin_fd: int, stdout: BinaryIO
) -> None:
    """Attach until the user detaches, stdin ends, or the connection drops (raised)."""
    is_tty = os.isatty(stdin_fd)
    async with client, client.console(vm_id) as console:
        if is_tty:
            sys.stderr.write(f"Connected to {vm_id} serial console. Press Ctrl-] to detach.\r\n")
            sys.stderr.flush()
            await _send_size(console, stdin_fd)
        loop = asyncio.get_running_loop()
        with raw_mode(stdin_fd):
            resize_tasks: set[asyncio.Task[None]] = set()
            if is_tty:

                def on_resize() -> None:
                    task = loop.create_task(_send_size(console, stdin_fd))
                    resize_tasks.add(task)
                    task.add_done_callback(resize_tasks.discard)

                loop.add_signal_handler(signal.SIGWINCH, on_resize)
            pumps = {
                asyncio.create_task(_pump_input(console, stdin_fd)),
                asyncio.create_task(_pump_output(console, stdout)),
            }
            try:
                done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if is_tty:
                    loop.remove_signal_handler(signal.SIGWINCH)
                for task in pumps | resize_tasks:
                    task.cancel()
                await asyncio.gather(*pumps, *resize_tasks, return_exceptions=True)
            for task in done:
                task.result()  # re-raise a dropped connection
    if is_tty:
        sys.stderr.write("\r\nDetached.\n")
