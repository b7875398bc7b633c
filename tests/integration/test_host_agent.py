"""`voidvm-server agent` as a process of its own, with the API reaching it over its socket.

A real agent process (QEMU, tiny guest) on a temporary data directory, and the real app in this
process with VOIDVM_AGENT_SOCKET: a VM is created, started and typed into through the socket;
the agent is killed with -9 while the VM runs, the QEMU lives on, and a new agent takes it back:
the same process answers on its console and stops when asked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import TCG_SCALE, Api, auth, make_settings, running_api
from tests.integration.conftest import (
    BOOT_TIMEOUT,
    READY_LINE,
    action,
    create_vm,
    get_vm,
    kill_qemus,
    poll,
    qemu_pids,
    serial_run,
    wait_console,
)

pytestmark = [pytest.mark.qemu, pytest.mark.asyncio(loop_scope="module")]


class AgentProcess:
    def __init__(self, data_dir: Path, socket: Path) -> None:
        self.data_dir, self.socket = data_dir, socket
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        env = {**os.environ, "VOIDVM_DATA_DIR": str(self.data_dir), "VOIDVM_AGENT_SOCKET": str(self.socket),
               "VOIDVM_ACCEL": "tcg", "VOIDVM_LOG_LEVEL": "info"}  # fmt: skip
        with (self.data_dir / "agent.log").open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "voidvm_server.cli", "agent"], env=env,
                                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    async def start(self) -> None:
        self.socket.unlink(missing_ok=True)  # a killed agent leaves its socket file behind
        self.spawn()

        async def listening() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            return self.socket.exists()

        await poll(listening, timeout=60 * TCG_SCALE, interval=0.1, what="the agent's socket")

    def log(self) -> str:
        return (self.data_dir / "agent.log").read_text(errors="replace")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    data_dir = tmp_path_factory.mktemp("agent")
    process = AgentProcess(data_dir, data_dir / "agent.sock")
    try:
        yield process
    finally:
        process.kill()
        kill_qemus(str(data_dir))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(agent: AgentProcess, tiny_image: tuple[Path, Path]) -> AsyncIterator[Api]:
    await agent.start()
    settings = make_settings(agent.data_dir, agent_socket=agent.socket)
    async with running_api(settings, None, tiny_image) as running:
        yield running


async def test_the_socket_is_the_owners_only(agent: AgentProcess, api: Api) -> None:
    mode = os.stat(agent.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert api.container.agent.accel == "tcg"


async def test_a_vm_runs_through_the_agent_and_outlives_a_killed_one(agent: AgentProcess, api: Api) -> None:
    token = await api.login()
    vm = await create_vm(api, token, "through-the-agent")
    await action(api, token, vm["id"], "start")
    await wait_console(api, token, vm["id"], READY_LINE, timeout=BOOT_TIMEOUT)
    assert await serial_run(api, vm["id"], "echo agent-$((40+2))") == "agent-42"
    [qemu] = qemu_pids(vm["id"])

    agent.kill()
    await asyncio.sleep(0.5)
    assert qemu_pids(vm["id"]) == [qemu]  # QEMU does not depend on the agent
    response = await api.client.get(f"/api/v1/vms/{vm['id']}/status", headers=auth(token))
    assert response.status_code == 503 and response.json()["error"]["code"] == "HYPERVISOR_UNAVAILABLE"

    await agent.start()  # a new agent takes the running QEMU back
    response = await api.client.get(f"/api/v1/vms/{vm['id']}/status", headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["pid"] == qemu and response.json()["data"]["qemu_status"] == "running"

    async def console_back() -> str | None:
        try:
            return await serial_run(api, vm["id"], "echo again-$((40+3))", timeout=5)
        except BaseException:  # the events connection is still being made again
            return None

    assert (
        await poll(console_back, timeout=30 * TCG_SCALE, what="the console through the new agent")
        == "again-43"
    )
    assert qemu_pids(vm["id"]) == [qemu]  # taken back, not started again
    await action(api, token, vm["id"], "stop", force=True)
    assert (await get_vm(api, token, vm["id"]))["status"] == "stopped"
    assert qemu_pids(vm["id"]) == []
