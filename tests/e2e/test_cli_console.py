"""`voidvm vm console` as a user runs it: the installed command in a child process against a real
server and the tiny guest, with input from a pipe, a file, /dev/null and a 0×0 terminal, and on a
stopped VM.

The console exits 0 once input has ended and the guest has been quiet for `--linger` seconds; a
refused attach is one error line and a non-zero exit code, never "Connected" first.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from voidvm import AsyncVoidVMClient

from tests.conftest import TCG_SCALE
from tests.e2e.conftest import ROOT, ServerProcess

pytestmark = pytest.mark.qemu
VOIDVM = ROOT / ".venv/bin/voidvm"
BOOT_TIMEOUT = 90 * TCG_SCALE
RUN_TIMEOUT = 120 * TCG_SCALE
LINGER = f"{2 * TCG_SCALE:g}"  # quiet seconds after input ends: the guest answers in milliseconds
COMMAND = "echo hel''lo-$((6*7))\n"  # the answer, hello-42, is not in what was typed
ANSWER = "hello-42"
CONNECTED = "Connected"


def _env(server: ServerProcess, token: str, config_home: Path) -> dict[str, str]:
    env = {**os.environ, "VOIDVM_URL": server.base_url, "VOIDVM_TOKEN": token}
    env["XDG_CONFIG_HOME"] = str(config_home)
    env.pop("VOIDVM_CONFIG", None)
    return env


@pytest.fixture(scope="module")
def admin_token(local_server: ServerProcess) -> str:
    return local_server.login()


@pytest.fixture
def cli_env(local_server: ServerProcess, admin_token: str, tmp_path: Path) -> dict[str, str]:
    return _env(local_server, admin_token, tmp_path / "config")


def _api(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=120 * TCG_SCALE
    )


def _create_vm(server: ServerProcess, token: str, name: str, *, start: bool) -> str:
    with _api(server, token) as api:
        answer = api.post("/vms", json={"name": name, "cpu": 1, "memory": 256, "disk": 1})
        assert answer.status_code in {200, 201, 202}, answer.text
        vm_id = str(answer.json()["data"]["id"])
        if start:
            started = api.post(f"/vms/{vm_id}/start", params={"wait": "true"})
            assert started.status_code in {200, 202}, started.text
    return vm_id


def _delete_vm(server: ServerProcess, token: str, vm_id: str) -> None:
    with _api(server, token) as api:
        api.delete(f"/vms/{vm_id}", params={"force": "true"})


async def _wait_until_shell_ready(server: ServerProcess, token: str, vm_id: str) -> None:
    client = AsyncVoidVMClient(base_url=server.base_url, token=token)
    async with client, client.console(vm_id) as console:
        await console.wait_for_output("VoidVM tiny guest ready", timeout=BOOT_TIMEOUT)


@pytest.fixture(scope="module")
def running_vm(local_server: ServerProcess, admin_token: str) -> Iterator[str]:
    vm_id = _create_vm(local_server, admin_token, "cli-console", start=True)
    try:
        asyncio.run(_wait_until_shell_ready(local_server, admin_token, vm_id))
        yield vm_id
    finally:
        _delete_vm(local_server, admin_token, vm_id)


def _console(
    vm_id: str, env: dict[str, str], stdin: int | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VOIDVM), "vm", "console", vm_id, "--linger", LINGER],
        env=env, stdin=stdin, input=input, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )  # fmt: skip


def _report(out: subprocess.CompletedProcess[str]) -> str:
    return f"exit {out.returncode}\nstdout: {out.stdout[-2000:]!r}\nstderr: {out.stderr[-2000:]!r}"


def test_console_with_input_from_a_pipe_shows_the_guests_answer_and_exits_0(
    running_vm: str, cli_env: dict[str, str]
) -> None:
    out = _console(running_vm, cli_env, input=COMMAND)
    assert out.returncode == 0, _report(out)
    assert ANSWER in out.stdout, _report(out)
    assert "Traceback" not in out.stderr, _report(out)


def test_console_with_input_from_dev_null_exits_0_without_a_traceback(
    running_vm: str, cli_env: dict[str, str]
) -> None:
    with open(os.devnull, "rb") as nothing:
        out = _console(running_vm, cli_env, stdin=nothing.fileno())
    assert out.returncode == 0, _report(out)
    assert "Traceback" not in out.stderr and "PermissionError" not in out.stderr, _report(out)
    assert "VoidVM tiny guest ready" in out.stdout, _report(out)  # the replay was shown


def test_console_with_input_from_a_file_runs_its_commands(
    running_vm: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "commands.txt"
    script.write_text("echo fi''le-$((7*6))\n")
    with script.open("rb") as commands:
        out = _console(running_vm, cli_env, stdin=commands.fileno())
    assert out.returncode == 0, _report(out)
    assert "file-42" in out.stdout, _report(out)
    assert "Traceback" not in out.stderr, _report(out)


def test_console_on_a_stopped_vm_is_one_clear_error_and_a_non_zero_exit(
    local_server: ServerProcess, admin_token: str, cli_env: dict[str, str]
) -> None:
    vm_id = _create_vm(local_server, admin_token, "cli-console-stopped", start=False)
    try:
        out = _console(vm_id, cli_env, input=COMMAND)
    finally:
        _delete_vm(local_server, admin_token, vm_id)
    assert out.returncode == 5, _report(out)  # ExitCode.CONFLICT: the VM is not running
    assert CONNECTED not in out.stdout + out.stderr, _report(out)
    assert "Traceback" not in out.stderr, _report(out)
    # Output.error's line (its details, if any, are Output's business).
    first = out.stderr.strip().splitlines()[0]
    assert first.startswith("Error") and "not running" in first.lower(), _report(out)


class _Terminal:
    """The parent side of a pty: what the child printed so far, read until a text appears."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.seen = ""

    def read_until(self, text: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return False
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                return False
            if not chunk:
                return False
            self.seen += chunk.decode(errors="replace")
        return True


def test_console_in_a_0x0_terminal_attaches_without_a_validation_error(
    running_vm: str, cli_env: dict[str, str]
) -> None:
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    assert os.get_terminal_size(child) == os.terminal_size((0, 0))
    terminal = _Terminal(parent)
    try:
        process = subprocess.Popen(
            [str(VOIDVM), "vm", "console", running_vm],
            env=cli_env, stdin=child, stdout=child, stderr=child, start_new_session=True,
        )  # fmt: skip
        os.close(child)
        # The replay is shown once the terminal is raw (setting raw mode drops pending input).
        replayed = terminal.read_until("VoidVM tiny guest ready", RUN_TIMEOUT)
        assert replayed, terminal.seen[-3000:]
        os.write(parent, COMMAND.strip().encode() + b"\r")
        # The answer comes after the server has handled the resize (one socket, in order).
        answered = terminal.read_until(ANSWER, RUN_TIMEOUT)
        os.write(parent, b"\x1d")  # Ctrl-] detaches
        terminal.read_until("Detached", RUN_TIMEOUT)
        code = process.wait(timeout=RUN_TIMEOUT)
    finally:
        os.close(parent)
    report = f"exit {code}\n{terminal.seen[-3000:]!r}"
    assert answered and code == 0, report
    assert "VALIDATION" not in terminal.seen.upper() and "Traceback" not in terminal.seen, report
    assert CONNECTED in terminal.seen and "Detached" in terminal.seen, report
