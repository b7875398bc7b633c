"""The serial console over a tiny local WebSocket server."""

from __future__ import annotations

import asyncio
import io
import os
import re

import pytest
from websockets.asyncio.server import ServerConnection

from voidvm import (
    AsyncVoidVMClient,
    ConflictError,
    ConsoleStateError,
    NotFoundError,
    WaitTimeoutError,
)
from voidvm.cli._terminal import DETACH_KEY, run_console, split_at_detach
from voidvm_testkit import WsRecorder, bounded, recv_json, send_json, ws_client, ws_server


def output(text: str, vm_id: str = "vm-1") -> dict[str, str]:
    return {"vmId": vm_id, "output": text}


async def login_shell(ws: ServerConnection, rec: WsRecorder) -> None:
    """A guest that asks for a login, then echoes a prompt for each command."""
    await recv_json(ws, rec)  # terminal-connect
    await send_json(ws, "terminal-output", output("Booting tiny\r\nvoidvm login: "))
    await send_json(ws, "terminal-output", output("noise for another vm", vm_id="vm-2"))
    while True:
        message = await recv_json(ws, rec)
        if message["type"] == "terminal-disconnect":
            await ws.close()
            return
        text = message["data"]["input"]
        await send_json(ws, "terminal-output", output(f"{text.strip()}\r\n~ # "))


async def test_console_attach_expect_write_and_detach() -> None:
    async with ws_client(login_shell, token="tok") as (client, rec):
        async with client.console("vm-1") as con:
            login = await bounded(con.wait_for_output("login:", timeout=3))
            await con.write("root\n")
            prompt = await bounded(con.wait_for_output(re.compile(r"~ [#$] "), timeout=3))
            await con.write("uname -a\n")
            chunk = await bounded(con.read(timeout=3))
        assert con.state == "closed"

    assert login.group(0) == "login:"
    assert prompt.string == " root\r\n~ # "
    assert chunk == "uname -a\r\n~ # "
    types = [m["type"] for m in rec.received]
    assert types == ["terminal-connect", "terminal-input", "terminal-input", "terminal-disconnect"]
    assert rec.received[0]["data"] == {"vmId": "vm-1", "type": "serial"}
    assert rec.received[1]["data"] == {"vmId": "vm-1", "input": "root\n"}
    assert rec.received[3]["data"] == {"vmId": "vm-1"}
    assert rec.paths == ["/ws?token=tok"]


async def test_wait_for_output_times_out_and_keeps_the_buffer() -> None:
    async with ws_client(login_shell) as (client, _), client.console("vm-1") as con:
        with pytest.raises(WaitTimeoutError) as caught:
            await bounded(con.wait_for_output("Password:", timeout=0.2))
        assert "login:" in con.buffer
        assert isinstance(caught.value, TimeoutError)
        assert (await con.read()).endswith("voidvm login: ")


@pytest.mark.parametrize(
    ("code", "expected"),
    [("VM_NOT_FOUND", NotFoundError), ("VM_NOT_RUNNING", ConflictError)],
)
async def test_console_error_message_raises_the_mapped_exception(
    code: str, expected: type[Exception]
) -> None:
    async def refuse(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        await send_json(ws, "error", {"code": code, "message": "cannot attach", "vmId": "vm-1"})
        await ws.wait_closed()

    async with ws_client(refuse) as (client, _), client.console("vm-1") as con:
        with pytest.raises(expected):
            await bounded(con.read())


async def test_console_used_outside_its_context_raises_a_state_error() -> None:
    client = AsyncVoidVMClient(base_url="http://127.0.0.1:9/api/v1", token="t")
    con = client.console("vm-1")
    with pytest.raises(ConsoleStateError):
        await con.write("x")
    await con.close()
    await client.aclose()


def test_detach_key_splits_input() -> None:
    assert split_at_detach(b"ls\n") == (b"ls\n", False)
    assert split_at_detach(b"ab" + DETACH_KEY + b"cd") == (b"ab", True)


class _SignallingBuffer(io.BytesIO):
    """stdout stand-in that lets the test await output instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Event()

    def write(self, data: bytes) -> int:  # type: ignore[override]
        written = super().write(data)
        self.changed.set()
        return written


async def _wait_for_bytes(buffer: _SignallingBuffer, needle: bytes) -> None:
    while needle not in buffer.getvalue():
        buffer.changed.clear()
        await buffer.changed.wait()


async def test_cli_console_pipes_stdin_and_detaches_on_ctrl_bracket() -> None:
    read_fd, write_fd = os.pipe()
    stdout = _SignallingBuffer()
    try:
        async with ws_server(login_shell) as (base_url, rec):
            client = AsyncVoidVMClient(base_url=base_url, token="t")
            session = asyncio.create_task(run_console(client, "vm-1", read_fd, stdout))
            await bounded(_wait_for_bytes(stdout, b"login: "))
            os.write(write_fd, b"root\n")
            await bounded(_wait_for_bytes(stdout, b"~ # "))
            os.write(write_fd, DETACH_KEY)
            await bounded(session)
    finally:
        os.close(read_fd)
        os.close(write_fd)

    assert b"noise for another vm" not in stdout.getvalue()
    assert stdout.getvalue().endswith(b"root\r\n~ # ")
    assert [m["type"] for m in rec.received] == [
        "terminal-connect",
        "terminal-input",
        "terminal-disconnect",
    ]
