"""``voidvm vm console``: the local terminal wired to a VM's serial console.

Keystrokes go to the VM as typed (raw mode when stdin is a terminal); ``Ctrl-]``
detaches, like telnet and ``virsh console``. Output is written to stdout as it arrives.
Both pumps are tasks owned by :func:`run_console`, which stops them when either ends.

Input may be a terminal, a pipe, a file or nothing (``</dev/null``). A terminal or a pipe
is watched by the event loop; what epoll refuses to watch (regular files, ``/dev/null``)
is read by a daemon thread instead. When input ends (not by ``Ctrl-]``) the output is
still shown until the guest has been quiet for ``linger`` seconds, so that the answer to
the last command piped in is printed before the command exits.

"Connected" is printed (on a terminal) only once the server has confirmed the attach, so
a stopped or missing VM is one error line and a non-zero exit, never "Connected" first.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import sys
import termios
import threading
import tty
from collections.abc import AsyncIterator, Iterator
from typing import BinaryIO, TextIO

from .._client import AsyncVoidVMClient
from .._console import Console
from .._errors import WaitTimeoutError

__all__ = [
    "DEFAULT_LINGER",
    "DETACH_KEY",
    "input_chunks",
    "run_console",
    "split_at_detach",
    "window_size",
]

#: Ctrl-] (group separator), the detach key.
DETACH_KEY = b"\x1d"
#: Seconds of guest silence, after input ends, before the console exits.
DEFAULT_LINGER = 1.0
#: How long the server may take to confirm the attach.
ATTACH_TIMEOUT = 30.0
#: The window sizes the server accepts (``terminal-resize``: 1–1000).
_MAX_SIZE = 1000
_READ_SIZE = 4096
_QUEUED_CHUNKS = 4


def split_at_detach(data: bytes) -> tuple[bytes, bool]:
    """Cut keyboard input at the detach key: ``(bytes to send, detach?)``."""
    index = data.find(DETACH_KEY)
    if index < 0:
        return data, False
    return data[:index], True


def window_size(columns: int, lines: int) -> tuple[int, int] | None:
    """The ``(cols, rows)`` to send for a terminal of this size, or None when it has none
    (a 0×0 pty, as under some CI runners and ``script``); capped at what the server takes."""
    if columns < 1 or lines < 1:
        return None
    return min(columns, _MAX_SIZE), min(lines, _MAX_SIZE)


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


def _read_in_thread(fd: int, loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes]) -> None:
    """Blocking reads for input epoll cannot watch; stops at end of input or loop shutdown."""
    while True:
        try:
            data = os.read(fd, _READ_SIZE)
        except OSError:
            data = b""
        try:
            # Waits while the queue is full: a large file is not read into memory at once.
            asyncio.run_coroutine_threadsafe(chunks.put(data), loop).result()
        except Exception:  # the loop stopped or was closed: nobody reads any more
            return
        if not data:
            return


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Wait until ``fd`` can be read; OSError when the loop cannot watch it."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def input_chunks(fd: int) -> AsyncIterator[bytes]:
    """The bytes read from ``fd`` until its end: watched by the loop when it can be (a
    terminal, a pipe, a socket), else read by a daemon thread (a file, ``/dev/null``).
    Each read waits for the previous chunk to be taken, so input never piles up."""
    loop = asyncio.get_running_loop()
    try:
        await _readable(loop, fd)
    except OSError:  # epoll refuses regular files and /dev/null (EPERM)
        chunks: asyncio.Queue[bytes] = asyncio.Queue(_QUEUED_CHUNKS)
        reader = threading.Thread(
            target=_read_in_thread,
            args=(fd, loop, chunks),
            name="voidvm-console-input",
            daemon=True,
        )
        reader.start()
        while data := await chunks.get():
            yield data
        return
    while True:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:  # another reader of a shared fd was faster
            await _readable(loop, fd)
            continue
        except OSError:
            return
        if not data:
            return
        yield data
        await _readable(loop, fd)


async def _pump_input(console: Console, fd: int) -> bool:
    """Send input to the guest; True when the user detached, False when input ended."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    async for chunk in input_chunks(fd):
        data, detach = split_at_detach(chunk)
        text = decoder.decode(data, final=detach)
        if text:
            await console.write(text)
        if detach:
            return True
    tail = decoder.decode(b"", final=True)
    if tail:
        await console.write(tail)
    return False


def _show(stdout: BinaryIO, text: str) -> None:
    stdout.write(text.encode("utf-8", errors="replace"))
    stdout.flush()


async def _pump_output(console: Console, stdout: BinaryIO) -> None:
    while True:
        _show(stdout, await console.read())


async def _linger(console: Console, stdout: BinaryIO, quiet: float) -> None:
    """Show output until the guest has printed nothing for ``quiet`` seconds."""
    while True:
        try:
            text = await console.read(timeout=quiet)
        except WaitTimeoutError:
            return
        _show(stdout, text)


async def _send_size(console: Console, fd: int) -> None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return
    wanted = window_size(size.columns, size.lines)
    if wanted is not None:
        await console.resize(*wanted)


async def run_console(
    client: AsyncVoidVMClient,
    vm_id: str,
    stdin_fd: int,
    stdout: BinaryIO,
    *,
    linger: float = DEFAULT_LINGER,
    notices: TextIO | None = None,
) -> None:
    """Attach until the user detaches, input ends and the guest goes quiet for ``linger``
    seconds, or the connection drops (raised, like a refused attach)."""
    notices = notices or sys.stderr
    is_tty = os.isatty(stdin_fd)
    async with client, client.console(vm_id) as console:
        await console.wait_attached(ATTACH_TIMEOUT)
        if is_tty:
            notices.write(f"Connected to {vm_id} serial console. Press Ctrl-] to detach.\r\n")
            notices.flush()
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
            typing = asyncio.create_task(_pump_input(console, stdin_fd))
            showing = asyncio.create_task(_pump_output(console, stdout))
            try:
                await asyncio.wait({typing, showing}, return_when=asyncio.FIRST_COMPLETED)
                if showing.done():
                    showing.result()  # re-raise a dropped connection or a closed terminal
                detached = typing.result()
                showing.cancel()
                await asyncio.wait({showing})
                if not showing.cancelled() and showing.exception() is not None:
                    showing.result()  # it failed before it saw the cancel
                if not detached and linger > 0:
                    await _linger(console, stdout, linger)
            finally:
                if is_tty:
                    loop.remove_signal_handler(signal.SIGWINCH)
                for task in {typing, showing} | resize_tasks:
                    task.cancel()
                await asyncio.gather(typing, showing, *resize_tasks, return_exceptions=True)
    if is_tty:
        notices.write("\r\nDetached.\n")
        notices.flush()
