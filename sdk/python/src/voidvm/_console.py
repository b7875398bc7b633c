"""A VM's serial console over the WebSocket, with expect-style waiting.

``terminal-connect {vmId, type: "serial"}`` attaches, ``terminal-connected`` confirms it
(:meth:`Console.wait_attached` waits for that, or raises the refusal); the server streams
``terminal-output {vmId, output}``; :meth:`Console.write` sends
``terminal-input {vmId, input}``; ``terminal-disconnect {vmId}`` detaches on close.

Output not yet consumed stays in :attr:`Console.buffer`; :meth:`Console.read` returns
it (or waits for more), :meth:`Console.wait_for_output` consumes it up to the end of a
match (a regex only matches complete lines, so a word split between two messages is seen
whole). States: ``new`` → ``attached`` → ``closed``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from collections.abc import Awaitable, Callable
from types import TracebackType

from ._errors import ConsoleStateError, VoidVMError, WaitTimeoutError
from ._models import Record
from ._ws import Socket, error_from_message

__all__ = ["Console"]

logger = logging.getLogger(__name__)


class _State(enum.Enum):
    NEW = "new"
    ATTACHED = "attached"
    CLOSED = "closed"


class Console:
    """``async with client.console(vm_id) as con:`` — a VM's serial console."""

    def __init__(self, connect: Callable[[], Awaitable[Socket]], vm_id: str) -> None:
        self._connect = connect
        self.vm_id = vm_id
        self._socket: Socket | None = None
        self._state = _State.NEW
        #: Output received but not yet returned by ``read``/``wait_for_output``.
        self.buffer = ""

    @property
    def state(self) -> str:
        return self._state.value

    async def open(self) -> Console:
        if self._state is not _State.NEW:
            raise ConsoleStateError(f"console for {self.vm_id} is {self.state}")
        self._socket = await self._connect()
        self._state = _State.ATTACHED
        try:
            await self._socket.send("terminal-connect", {"vmId": self.vm_id, "type": "serial"})
        except BaseException:
            await self.close()
            raise
        return self

    async def wait_attached(self, timeout: float = 30.0) -> Record:  # noqa: ASYNC109
        """Wait for the server to confirm the attach (``terminal-connected``) and return its
        data (``{vmId, type, replayBytes}``). Output that arrives meanwhile is kept in
        :attr:`buffer`; a refusal (``VM_NOT_RUNNING``, ``VM_NOT_FOUND``…) is raised as the
        mapped error, and no answer within ``timeout`` s as :class:`WaitTimeoutError`."""
        socket = self._attached()
        try:
            async with asyncio.timeout(timeout) as deadline:
                while True:
                    message = await socket.recv()
                    if message.vm_id not in (self.vm_id, None):
                        continue
                    if message.type == "terminal-connected":
                        return message.data
                    if message.type == "terminal-output":
                        output = message.data.get("output")
                        if isinstance(output, str):
                            self.buffer += output
                    elif message.type == "error":
                        raise error_from_message(message)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise WaitTimeoutError(
                f"the server did not confirm the console attach to {self.vm_id} within {timeout:g}s"
            ) from None

    def _attached(self) -> Socket:
        if self._state is not _State.ATTACHED or self._socket is None:
            raise ConsoleStateError(f"console for {self.vm_id} is {self.state}")
        return self._socket

    async def write(self, text: str) -> None:
        """Send keystrokes (``"root\\n"``) to the serial port."""
        await self._attached().send("terminal-input", {"vmId": self.vm_id, "input": text})

    async def resize(self, cols: int, rows: int) -> None:
        await self._attached().send(
            "terminal-resize", {"vmId": self.vm_id, "cols": cols, "rows": rows}
        )

    async def read(self, timeout: float | None = None) -> str:  # noqa: ASYNC109 (expect-style API)
        """Return buffered output, or wait (up to ``timeout`` s) for the next chunk."""
        if not self.buffer:
            try:
                async with asyncio.timeout(timeout) as deadline:
                    self.buffer += await self._next_output()
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise WaitTimeoutError(
                    f"no console output from {self.vm_id} within {timeout:g}s"
                ) from None
        text, self.buffer = self.buffer, ""
        return text

    async def wait_for_output(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 30.0,  # noqa: ASYNC109 (expect-style API)
        *,
        partial_line: bool = False,
    ) -> re.Match[str]:
        """Wait until the output matches ``pattern`` and return the match.

        A plain string is matched literally, as soon as it has arrived (``"login:"``,
        ``"# "``: prompts that end no line). A compiled regex is matched only against
        complete lines, the output up to its last ``\n``: output arrives in pieces, and
        ``Linux \\S+`` must not match ``Linux voidv`` when ``m 6.1…`` is still on its way.
        ``partial_line=True`` also searches the line still being printed (for a prompt
        regex such as ``[#$] $``), with that risk. Output up to the end of the match is
        consumed; the rest stays buffered. Raises :class:`WaitTimeoutError` (also a
        ``TimeoutError``) with the unmatched output kept in :attr:`buffer`."""
        literal = isinstance(pattern, str)
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
        whole_buffer = literal or partial_line
        try:
            async with asyncio.timeout(timeout) as deadline:
                while (match := _search(regex, self.buffer, whole_buffer)) is None:
                    self.buffer += await self._next_output()
        except TimeoutError:
            if not deadline.expired():
                raise
            tail = self.buffer[-200:]
            hint = ""
            if not whole_buffer and regex.search(self.buffer):
                hint = " (the unfinished last line matches: pass partial_line=True for prompts)"
            raise WaitTimeoutError(
                f"console of {self.vm_id} did not print {regex.pattern!r} within "
                f"{timeout:g}s{hint}; last output: {tail!r}"
            ) from None
        self.buffer = self.buffer[match.end() :]
        return match

    async def _next_output(self) -> str:
        socket = self._attached()
        while True:
            message = await socket.recv()
            if message.type == "terminal-output" and message.vm_id in (self.vm_id, None):
                output = message.data.get("output")
                if isinstance(output, str) and output:
                    return output
            elif message.type == "error" and message.vm_id in (self.vm_id, None):
                raise error_from_message(message)

    async def close(self) -> None:
        """Detach (``terminal-disconnect``) and close the socket; safe to call twice."""
        if self._state is _State.CLOSED:
            return
        socket, self._socket = self._socket, None
        self._state = _State.CLOSED
        if socket is None:
            return
        try:
            await socket.send("terminal-disconnect", {"vmId": self.vm_id})
        except VoidVMError:
            logger.debug("console socket for %s already closed", self.vm_id)
        finally:
            await socket.close()

    async def __aenter__(self) -> Console:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _search(regex: re.Pattern[str], buffer: str, whole_buffer: bool) -> re.Match[str] | None:
    """The first match in `buffer`, or with `whole_buffer` false in its complete lines only
    (up to and including its last newline), so that a match cannot grow with more output."""
    if whole_buffer:
        return regex.search(buffer)
    end = buffer.rfind("\n") + 1
    return regex.search(buffer, 0, end) if end else None
