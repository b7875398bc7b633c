"""`voidvm-server serve --workers 2` as the README runs it: the host agent and two API workers.

What one worker alone could not keep honest is checked across both: every request goes on a
connection of its own, so the kernel hands them to either worker. Then the processes are killed:
a worker (the VM, its console and the other worker carry on; `serve` starts another), every
worker at once (the console's output is all there after the reconnect), and the agent (it comes
back and takes the same QEMU back); and both workers race on one VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import require_qemu
from tests.server_process import ServerProcess, spawn_server

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_qemu()
    served = spawn_server(tmp_path_factory.mktemp("workers"), env={"VOIDVM_WORKERS": "2"})
    try:
        yield served
    finally:
        served.stop()


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def workers_of(server: ServerProcess) -> list[int]:
    return [p for p in children(server.process.pid) if process_name(p).startswith("voidvm-api-")]


def agent_of(server: ServerProcess) -> list[int]:
    return [p for p in children(server.process.pid) if "voidvm_server.cli agent" in command_line(p)]


def qemu_of(vm_id: str) -> list[int]:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return [p for p in pids if "qemu-system" in (line := command_line(p)) and vm_id in line]


def fresh(server: ServerProcess) -> httpx.Client:
    """A client that opens a new connection for every request: either worker may answer it."""
    return httpx.Client(base_url=server.base_url, headers={"Connection": "close"}, timeout=30)


def user_token(server: ServerProcess, name: str) -> str:
    admin = server.login()
    with fresh(server) as http:
        created = http.post("/users", json={"username": name, "password": "s3cret-pass", "email": None},
                            headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
        assert created.status_code == 201, created.text
    return server.login(name, "s3cret-pass")


def wait_until(condition: object, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_two_workers_and_the_agent_run_under_serve(server: ServerProcess) -> None:
    wait_until(lambda: len(workers_of(server)) == 2, "the second worker")  # health answers after the first
    assert len(agent_of(server)) == 1
    assert oct((server.data_dir / "agent.sock").stat().st_mode & 0o777) == "0o600"


def test_a_user_gets_exactly_100_requests_a_minute_across_workers(server: ServerProcess) -> None:
    token = user_token(server, "counted")
    headers = {"Authorization": f"Bearer {token}"}
    with fresh(server) as http:
        codes = [http.get("/vms", headers=headers).status_code for _ in range(115)]
    assert codes.count(200) == 100 and codes.count(429) == 15
    assert codes[:100] == [200] * 100  # the window is one, whichever worker counts


@contextlib.asynccontextmanager
async def event_socket(server: ServerProcess, token: str) -> AsyncIterator[ClientConnection]:
    url = server.base_url.replace("http://", "ws://").removesuffix("/api/v1") + "/ws"
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        yield ws


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code, or None while the socket answers a ping."""
    await ws.send('{"type": "ping", "id": "p"}')
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                if '"pong"' in str(await ws.recv()):
                    return None
    except ConnectionClosed:
        return ws.close_code


async def test_a_user_holds_at_most_10_websockets_across_workers(server: ServerProcess) -> None:
    token = await asyncio.to_thread(user_token, server, "sockets")
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(event_socket(server, token)) for _ in range(10)]
        assert [await closed_with(ws) for ws in sockets] == [None] * 10
        async with event_socket(server, token) as eleventh:
            assert await closed_with(eleventh) == 1008
        await sockets[0].close()
        async with asyncio.timeout(TIMEOUT):
            while True:  # the seat is freed as the socket ends, by whichever worker held it
                async with event_socket(server, token) as again:
                    if await closed_with(again) is None:
                        break
                await asyncio.sleep(0.1)


def start_vm(server: ServerProcess, token: str, name: str) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    with fresh(server) as http:
        created = http.post("/vms", json={"name": name, "cpu": 1, "memory": 128, "disk": 1}, headers=headers)
        assert created.status_code == 201, created.text
        vm_id = str(created.json()["data"]["id"])
        started = http.post(f"/vms/{vm_id}/start", headers=headers)
        assert started.status_code == 200 and started.json()["data"]["status"] == "running", started.text
    return vm_id


def ticket(server: ServerProcess, token: str, vm_id: str) -> str:
    with fresh(server) as http:
        issued = http.post(f"/vms/{vm_id}/console", json={"type": "serial"},
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert issued.status_code == 201, issued.text
        return str(issued.json()["data"]["url"])


async def console_says(url: str, marker: str) -> bool:
    """Type `echo <marker>` into the serial console; True once the guest echoes it back."""
    async with connect(url) as ws:
        seen, typed_at = b"", 0.0
        async with asyncio.timeout(TIMEOUT):
            while f"{marker}-42".encode() not in seen:
                if time.monotonic() - typed_at > 3:  # again until the shell is up to read it
                    await ws.send(f"\necho {marker}-$((6*7))\n".encode())
                    typed_at = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    message = await asyncio.wait_for(ws.recv(), 1)
                    seen += message.encode() if isinstance(message, str) else message
    return True


async def test_a_ticket_opens_one_console_whichever_worker_redeems_it(server: ServerProcess) -> None:
    token = server.login()
    vm_id = await asyncio.to_thread(start_vm, server, token, "ticketed")
    url = await asyncio.to_thread(ticket, server, token, vm_id)
    assert await console_says(url, "first")
    async with connect(url) as again:  # spent: whichever worker takes it, the row is gone
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(TIMEOUT):
                await again.recv()
        assert again.close_code == 4401


async def test_killing_a_worker_or_the_agent_leaves_the_vm_and_its_console_running(
    server: ServerProcess,
) -> None:
    token = server.login()
    vm_id = await asyncio.to_thread(start_vm, server, token, "survivor")
    headers = {"Authorization": f"Bearer {token}"}
    qemu = qemu_of(vm_id)
    assert len(qemu) == 1

    for victim in (workers_of(server)[0], agent_of(server)[0]):
        os.kill(victim, signal.SIGKILL)
        gone = lambda pid=victim: pid not in children(server.process.pid)  # noqa: E731
        await asyncio.to_thread(wait_until, gone, "the kill")
        await asyncio.to_thread(
            wait_until, lambda: len(workers_of(server)) == 2 and len(agent_of(server)) == 1, "serve's restart"
        )
        url = await asyncio.to_thread(ticket, server, token, vm_id)
        assert await console_says(url, f"after-{victim}")  # the same guest, still up
        with fresh(server) as http:
            assert http.get(f"/vms/{vm_id}", headers=headers).json()["data"]["status"] == "running"
        assert qemu_of(vm_id) == qemu  # the same process, never a second one


@pytest.fixture
def pausing_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """Its workers hang for good just before spawning a QEMU (VOIDVM_TEST_PAUSE_AT), writing
    their pid to a marker: the test kills that very worker in the middle of a start."""
    require_qemu()
    env = {"VOIDVM_WORKERS": "2", "VOIDVM_TEST_PAUSE_AT": "before-spawn",
           "VOIDVM_LOG_LEVEL": "INFO"}  # fmt: skip
    served = spawn_server(tmp_path / "pausing", env=env)
    try:
        yield served
    finally:
        served.stop()


def test_a_start_cut_short_by_its_workers_death_ends_failed_and_the_vm_is_not_left_starting(
    pausing_server: ServerProcess,
) -> None:
    server, token = pausing_server, pausing_server.login()
    # Both workers up (the first answers before the second has started): the killed one is
    # then not the last, and the other takes its duty over.
    wait_until(lambda: "with 2 API workers" in server.log_tail(100_000), "the second worker")
    headers = {"Authorization": f"Bearer {token}"}
    with fresh(server) as http:
        body = {"name": "orphaned", "cpu": 1, "memory": 128, "disk": 1}
        vm_id = http.post("/vms", json=body, headers=headers).json()["data"]["id"]
        accepted = http.post(f"/vms/{vm_id}/start", json={"wait": False}, headers=headers)
        assert accepted.status_code == 202, accepted.text
        op_id = accepted.json()["operation"]["id"]
    marker = server.data_dir / "paused-at-before-spawn"
    wait_until(lambda: marker.exists() and marker.read_text().strip(), "the worker to pause")
    victim = int(marker.read_text())
    assert victim in workers_of(server)
    os.kill(victim, signal.SIGKILL)

    def settled() -> dict[str, object] | None:
        with fresh(server) as http:
            op = http.get(f"/operations/{op_id}", headers=headers).json()["data"]
            vm = http.get(f"/vms/{vm_id}", headers=headers).json()["data"]
        return {"op": op, "vm": vm} if op["status"] != "running" and vm["status"] != "starting" else None

    wait_until(settled, "another worker to fail the operation and reclaim the VM")
    seen = settled()
    assert seen is not None
    op, vm = seen["op"], seen["vm"]
    assert op["status"] == "failed" and op["error"]["code"] == "INTERRUPTED", op  # type: ignore[index]
    assert vm["status"] == "error" and "worker" in vm["status_reason"], vm  # type: ignore[index]
    assert qemu_of(vm_id) == []


async def test_killing_every_worker_loses_no_console_output_beyond_the_reconnect(
    server: ServerProcess,
) -> None:
    """Both workers killed at once while a console is attached and the guest prints a numbered
    line five times a second: the console's socket drops, `serve` starts two new workers, and a
    new console finds, replayed and then live, every line the guest printed meanwhile."""
    token = server.login()
    vm_id = await asyncio.to_thread(start_vm, server, token, "ticking")
    qemu = qemu_of(vm_id)
    assert await console_says(await asyncio.to_thread(ticket, server, token, vm_id), "up")  # its shell
    url = await asyncio.to_thread(ticket, server, token, vm_id)
    async with connect(url) as ws:
        await ws.send(b"i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done &\n")
        seen = await read_until(ws, lambda text: max_tick(text) >= 3)
        before = set(workers_of(server))
        for victim in before:
            os.kill(victim, signal.SIGKILL)
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(TIMEOUT):
                while True:  # what was on its way, until the socket drops with its worker
                    message = await ws.recv()
                    seen += message.encode() if isinstance(message, str) else message
    last_before = max_tick(seen.decode(errors="replace"))
    await asyncio.to_thread(
        wait_until, lambda: len(workers_of(server)) == 2 and not before & set(workers_of(server)),
        "two new workers",
    )  # fmt: skip
    url = await asyncio.to_thread(ticket, server, token, vm_id)
    async with connect(url) as ws:
        after = await read_until(ws, lambda text: max_tick(text) > last_before + 3)
    ticks = ticks_in(after.decode(errors="replace"))
    assert ticks and min(ticks) <= last_before + 1, (last_before, sorted(ticks)[:10])
    assert set(range(last_before + 1, max(ticks) + 1)) <= ticks, "a line printed meanwhile is missing"
    assert qemu_of(vm_id) == qemu  # the same guest all along


def ticks_in(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"tick-(\d+)\r?\n", text)}


def max_tick(text: str) -> int:
    return max(ticks_in(text), default=0)


async def read_until(ws: ClientConnection, done: Callable[[str], bool]) -> bytes:
    seen = b""
    async with asyncio.timeout(TIMEOUT):
        while not done(seen.decode(errors="replace")):
            message = await ws.recv()
            seen += message.encode() if isinstance(message, str) else message
    return seen


CLEAR_REFUSALS = {"VM_ALREADY_RUNNING", "VM_NOT_RUNNING", "INVALID_STATE", "OPERATION_IN_PROGRESS"}


def test_two_workers_racing_on_one_vm_take_turns_and_every_answer_is_clear(server: ServerProcess) -> None:
    """Starts, stops and deletes of one VM sent at once, each on its own connection (so both
    workers get some): each answer is a success or a 409 that says why, never a 500; after each
    round the VM's status is what its QEMU is, with never two of them; the delete wins once."""
    token = server.login()
    headers = {"Authorization": f"Bearer {token}"}
    with fresh(server) as http:
        created = http.post(
            "/vms", json={"name": "raced", "cpu": 1, "memory": 128, "disk": 1}, headers=headers
        )
        assert created.status_code == 201, created.text
        vm_id = created.json()["data"]["id"]

    def send(request: tuple[str, str, dict[str, object] | None]) -> httpx.Response:
        method, path, body = request
        with fresh(server) as http:
            return http.request(method, path, json=body, headers=headers)

    def race(
        requests: list[tuple[str, str, dict[str, object] | None]], also: frozenset[int] = frozenset()
    ) -> list[httpx.Response]:
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(send, requests))
        for answer in answers:
            assert answer.status_code in {200, 409, *also}, answer.text
            if answer.status_code == 409:
                assert answer.json()["error"]["code"] in CLEAR_REFUSALS, answer.text
        return answers

    start = ("POST", f"/vms/{vm_id}/start", None)
    stop = ("POST", f"/vms/{vm_id}/stop", {"force": True})
    for _ in range(4):
        answers = race([start, stop, start, stop])
        assert any(a.status_code == 200 for a in answers)  # someone always gets through
        with fresh(server) as http:
            status = http.get(f"/vms/{vm_id}", headers=headers).json()["data"]["status"]
        assert status in {"running", "stopped"}, status
        assert len(qemu_of(vm_id)) == (1 if status == "running" else 0), status
    race([stop, stop])
    delete = ("DELETE", f"/vms/{vm_id}", None)
    answers = race([delete, delete, start], also=frozenset({404}))  # once deleted: not found
    assert [a.status_code for a in answers[:2]].count(200) <= 1  # deleted once
    with fresh(server) as http:
        gone = http.get(f"/vms/{vm_id}", headers=headers)
    if gone.status_code == 200:  # the start won the turn: the deletes were refused, clearly
        assert gone.json()["data"]["status"] == "running"
        assert [a.status_code for a in answers[:2]] == [409, 409]  # it must be stopped first
        race([stop])
        assert send(delete).status_code == 200
        with fresh(server) as http:
            gone = http.get(f"/vms/{vm_id}", headers=headers)
    assert gone.status_code == 404, gone.text
    assert qemu_of(vm_id) == []
