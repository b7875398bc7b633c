"""The serial console over a tiny local WebSocket server."""

from __future__ import annotations

import asyncio
import io
import os
import re
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection

from voidvm import (
    AsyncVoidVMClient,
    ConflictError,
    ConsoleStateError,
    NotFoundError,
    WaitTimeoutError,
)
from voidvm.cli._terminal import (
    DETACH_KEY,
    input_chunks,
    run_console,
    split_at_detach,
    window_size,
)
from voidvm_testkit import (
    WsHandler,
    WsRecorder,
    bounded,
    recv_json,
    send_json,
    ws_client,
    ws_server,
)


def output(text: str, vm_id: str = "vm-1") -> dict[str, str]:
    return {"vmId": vm_id, "output": text}


async def login_shell(ws: ServerConnection, rec: WsRecorder) -> None:
    """A guest that asks for a login, then echoes a prompt for each command."""
    await recv_json(ws, rec)  # terminal-connect
    await send_json(ws, "terminal-connected", {"vmId": "vm-1", "type": "serial", "replayBytes": 0})
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
            prompt = await bounded(
                con.wait_for_output(re.compile(r"~ [#$] "), timeout=3, partial_line=True)
            )
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


def guest_printing(*chunks: str) -> WsHandler:
    """A guest whose console prints `chunks`, one `terminal-output` message each, in order."""

    async def handler(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)  # terminal-connect
        for chunk in chunks:
            await send_json(ws, "terminal-output", output(chunk))
        await ws.wait_closed()

    return handler


async def test_a_regex_waits_for_the_line_when_output_is_split_mid_word() -> None:
    guest = guest_printing("uname -a\r\nLinux void", "vm 6.1.0-tiny x86", "_64 GNU/Linux\r\n# ")
    async with ws_client(guest) as (client, _), client.console("vm-1") as con:
        match = await bounded(con.wait_for_output(re.compile(r"Linux \S+"), timeout=3))
        assert match.group(0) == "Linux voidvm"
        assert con.buffer.startswith(" 6.1.0-tiny x86_64 GNU/Linux\r\n")
        rest = await bounded(con.wait_for_output(re.compile(r"x86\S*"), timeout=3))
        assert rest.group(0) == "x86_64"


async def test_a_literal_string_matches_across_pieces_and_in_an_unfinished_line() -> None:
    guest = guest_printing("VoidVM tiny gu", "est ready\r\n~ ", "# ")
    async with ws_client(guest) as (client, _), client.console("vm-1") as con:
        ready = await bounded(con.wait_for_output("VoidVM tiny guest ready", timeout=3))
        prompt = await bounded(con.wait_for_output("~ # ", timeout=3))
        assert (ready.group(0), prompt.group(0), con.buffer) == (
            "VoidVM tiny guest ready",
            "~ # ",
            "",
        )


async def test_partial_line_lets_a_prompt_regex_match_before_its_line_ends() -> None:
    guest = guest_printing("root\r\n", "~ ", "# ")
    async with ws_client(guest) as (client, _), client.console("vm-1") as con:
        prompt = await bounded(
            con.wait_for_output(re.compile(r"[#$] $"), timeout=3, partial_line=True)
        )
        assert prompt.group(0) == "# "


async def test_a_regex_that_only_the_unfinished_line_matches_times_out_with_a_hint() -> None:
    async with (
        ws_client(guest_printing("root\r\n~ # ")) as (client, _),
        client.console("vm-1") as con,
    ):
        await bounded(con.wait_for_output("root", timeout=3))
        with pytest.raises(WaitTimeoutError, match="partial_line=True"):
            await bounded(con.wait_for_output(re.compile(r"[#$] $"), timeout=0.3))
        assert con.buffer == "\r\n~ # "


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


def test_window_size_skips_a_terminal_without_one_and_caps_what_the_server_refuses() -> None:
    assert window_size(0, 0) is None
    assert window_size(80, 0) is None
    assert window_size(80, 24) == (80, 24)
    assert window_size(5000, 2000) == (1000, 1000)


async def _all_chunks(fd: int) -> bytes:
    return b"".join([chunk async for chunk in input_chunks(fd)])


async def test_input_chunks_reads_what_epoll_refuses_a_file_and_dev_null(tmp_path: Path) -> None:
    script = tmp_path / "input.txt"
    script.write_bytes(b"echo one\n" * 3000)  # more than one read and a full queue
    file, nothing = os.open(script, os.O_RDONLY), os.open(os.devnull, os.O_RDONLY)
    try:
        assert await bounded(_all_chunks(file)) == script.read_bytes()
        assert await bounded(_all_chunks(nothing)) == b""
    finally:
        os.close(file)
        os.close(nothing)


async def test_input_chunks_reads_a_pipe_until_it_ends() -> None:
    read_fd, write_fd = os.pipe()
    try:
        reading = asyncio.create_task(_all_chunks(read_fd))
        os.write(write_fd, b"uname\n")
        os.close(write_fd)
        assert await bounded(reading) == b"uname\n"
    finally:
        os.close(read_fd)


async def test_cli_console_shows_output_after_input_ends_until_the_guest_is_quiet() -> None:
    async def slow_answer(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        await send_json(ws, "terminal-connected", {"vmId": "vm-1", "type": "serial"})
        message = await recv_json(ws, rec)  # the piped command
        await send_json(ws, "terminal-output", output(message["data"]["input"]))
        await send_json(ws, "terminal-output", output("answer-42\r\n# "))
        await ws.wait_closed()

    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"echo answer\n")
    os.close(write_fd)
    stdout = _SignallingBuffer()
    try:
        async with ws_server(slow_answer) as (base_url, rec):
            client = AsyncVoidVMClient(base_url=base_url, token="t")
            await bounded(run_console(client, "vm-1", read_fd, stdout, linger=0.5))
    finally:
        os.close(read_fd)
    assert stdout.getvalue() == b"echo answer\nanswer-42\r\n# "
    assert [m["type"] for m in rec.received] == ["terminal-connect", "terminal-input"]


async def test_cli_console_raises_a_refused_attach_before_reading_input() -> None:
    async def refuse(ws: ServerConnection, rec: WsRecorder) -> None:
        await recv_json(ws, rec)
        message = {"code": "VM_NOT_RUNNING", "message": "The VM is not running", "vmId": "vm-1"}
        await send_json(ws, "error", message)
        await ws.wait_closed()

    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"echo never\n")
    notices = io.StringIO()
    try:
        async with ws_server(refuse) as (base_url, rec):
            client = AsyncVoidVMClient(base_url=base_url, token="t")
            with pytest.raises(ConflictError):
                await bounded(run_console(client, "vm-1", read_fd, io.BytesIO(), notices=notices))
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert notices.getvalue() == ""
    assert "terminal-input" not in [m["type"] for m in rec.received]
