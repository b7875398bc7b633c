"""A burst of concurrent creates with kill -9 of the server in the middle of it (issue #7, case 6)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.faults.conftest import ServerFactory, assert_consistent, metric, sqlite_integrity

pytestmark = pytest.mark.qemu
BURST = 30
KILL_AFTER = 8  # answers received before the kill: the rest are in flight or not yet sent


async def test_kill_9_in_a_burst_of_creates_loses_no_acknowledged_vm(servers: ServerFactory) -> None:
    server = await servers()
    await server.start()
    created: dict[str, str] = {}  # name -> id, for every 201
    failed: list[str] = []
    enough = asyncio.Event()
    async with server.api() as http:
        usage_before = await http.usage()

        async def create(n: int) -> None:
            body: dict[str, Any] = {"name": f"burst-{n:02d}", "cpu": 1, "memory": 64, "disk": 1}
            try:
                response = await http.client.post("/vms", json=body)
            except httpx.HTTPError as exc:  # the server died under it
                failed.append(type(exc).__name__)
                return
            assert response.status_code == 201, response.text
            created[body["name"]] = response.json()["data"]["id"]
            if len(created) >= KILL_AFTER:
                enough.set()

        tasks = [asyncio.ensure_future(create(n)) for n in range(BURST)]
        async with asyncio.timeout(60):
            await enough.wait()
        server.kill9()
        await asyncio.gather(*tasks)
    metric("burst_acknowledged_before_kill", len(created))
    metric("burst_failed_by_kill", len(failed))
    assert len(created) + len(failed) == BURST
    assert failed, "the kill came too late to hit requests in flight"

    # The database file survived the kill.
    assert sqlite_integrity(server.db_path) == ("ok", [])

    await server.start()
    async with server.api() as http:
        vms = await assert_consistent(http, server.data_dir)  # nothing stuck in `creating`
        by_name = {vm["name"]: vm for vm in vms}
        for name, vm_id in created.items():
            assert by_name[name]["id"] == vm_id, f"{name} got a 201 but is gone"
            assert by_name[name]["status"] == "stopped"
        # Creates that were cut off either never reached the database or were finished on restart.
        extra = set(by_name) - set(created)
        metric("burst_unacknowledged_but_finished", len(extra))
        assert all(by_name[name]["status"] == "stopped" for name in extra)
        assert (await http.usage())["vms"] == usage_before["vms"] + len(vms)
    assert sqlite_integrity(server.db_path) == ("ok", [])
