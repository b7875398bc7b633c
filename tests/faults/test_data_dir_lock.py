"""A second server started on a data directory already served (issue #13).

It used to take the first one's QEMUs for dead (their QMP sockets were busy) and put every running
VM into `error`. Now it refuses to start, names the first server's pid and the directory, and exits
non-zero before it opens the database; the first server and its VMs carry on untouched.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.faults.conftest import (
    ROOT,
    ServerFactory,
    assert_consistent,
    free_port,
    qemu_pids,
    server_env,
)

pytestmark = pytest.mark.qemu
REFUSAL_TIMEOUT = 120  # a safety net for a hung child, not a measured time


async def test_a_second_server_on_the_same_data_dir_refuses_and_the_vms_keep_running(
    servers: ServerFactory,
) -> None:
    server = await servers()
    await server.start()
    async with server.api() as http:
        vm_id = (await http.create_vm("keeps-running"))["id"]
        await http.action(vm_id, "start")
        before = await http.vm(vm_id)
        pid = (await http.live(vm_id))["pid"]

    # Its own database file (outside the data dir) shows whether it got as far as opening one.
    second_db = server.data_dir.parent / "second.db"
    env = server_env(server.data_dir, free_port(), VOIDVM_DATABASE_URL=f"sqlite+aiosqlite:///{second_db}")
    second = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "voidvm_server.cli", "serve", "--skip-tiny-image"],
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=REFUSAL_TIMEOUT,
    )  # fmt: skip

    output = second.stdout + second.stderr
    assert second.returncode != 0, output
    assert f"pid {server.pid}" in output and str(server.data_dir.resolve()) in output, output
    assert not second_db.exists()
    async with server.api() as http:
        after = await http.vm(vm_id)
        assert (after["status"], after["status_reason"]) == ("running", before["status_reason"])
        assert qemu_pids(vm_id) == [pid]
        await assert_consistent(http, server.data_dir)

    # Once the first server has stopped, the directory is free again.
    server.stop()
    await server.start()
    async with server.api() as http:
        assert (await http.vm(vm_id))["status"] == "running" and qemu_pids(vm_id) == [pid]
