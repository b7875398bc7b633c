"""The serial terminals one /ws socket is attached to (terminal-connect/input/resize/disconnect).

Output is UTF-8 decoded incrementally per terminal (a character split across two reads is kept
whole; invalid bytes become U+FFFD) and sent as `terminal-output {vmId, output}` text.
`terminal-resize` is recorded and acknowledged by nothing: a serial line carries no window size
(run `stty cols C rows R` in the guest to tell it).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voidvm_server.errors import InvalidStateError, VoidVMError
from voidvm_server.services.console import ConsoleHub

Send = Callable[[str, dict[str, Any], str | int | None], None]


def _not_connected(vm_id: str) -> InvalidStateError:
    return InvalidStateError(
        f"No terminal is connected to {vm_id} on this socket; send terminal-connect first",
        code="TERMINAL_NOT_CONNECTED",
        current="detached",
    )


@dataclass(eq=False)
class TerminalViewer:
    vm_id: str
    send: Send
    gone: Callable[[str, VoidVMError], None]
    cols: int | None = None
    rows: int | None = None
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def replay(self, data: bytes, msg_id: str | int | None) -> None:
        text = self._decoder.decode(data)
        if text:
            self.send("terminal-output", {"vmId": self.vm_id, "output": text, "replay": True}, msg_id)

    def on_output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if text:
            self.send("terminal-output", {"vmId": self.vm_id, "output": text}, None)

    def on_closed(self, code: str, reason: str) -> None:
        self.gone(self.vm_id, VoidVMError(f"The terminal closed: {reason}", code=code))


class Terminals:
    def __init__(self, consoles: ConsoleHub, send: Send, fail: Callable[[VoidVMError, str | None], None]):
        self.consoles = consoles
        self._send = send
        self._fail = fail
        self._attached: dict[str, TerminalViewer] = {}

    async def connect(self, vm_id: str, cols: int | None, rows: int | None, msg_id: str | int | None) -> None:
        """Attach (the caller checked access); replies `terminal-connected`, then the replay."""
        viewer = self._attached.get(vm_id)
        if viewer is None:
            viewer = TerminalViewer(vm_id, self._send, self._gone, cols, rows)
            replay = await self.consoles.attach(vm_id, viewer)
            self._attached[vm_id] = viewer
        else:
            replay = b""  # already attached: nothing to repeat
        self._send(
            "terminal-connected",
            {"vmId": vm_id, "type": "serial", "replayBytes": len(replay)},
            msg_id,
        )
        viewer.replay(replay, msg_id)

    async def input(self, vm_id: str, text: str) -> None:
        if vm_id not in self._attached:
            raise _not_connected(vm_id)
        await self.consoles.write(vm_id, text.encode())

    def resize(self, vm_id: str, cols: int, rows: int) -> None:
        viewer = self._attached.get(vm_id)
        if viewer is None:
            raise _not_connected(vm_id)
        viewer.cols, viewer.rows = cols, rows

    async def disconnect(self, vm_id: str) -> bool:
        viewer = self._attached.pop(vm_id, None)
        if viewer is None:
            return False
        await self.consoles.detach(vm_id, viewer)
        return True

    def _gone(self, vm_id: str, error: VoidVMError) -> None:
        if self._attached.pop(vm_id, None) is not None:
            self._fail(error, vm_id)

    async def close(self) -> None:
        for vm_id in list(self._attached):
            await self.disconnect(vm_id)
