"""Concurrent start and delete on one VM, and a create raced by a forced delete (issue #7, case 9).

Every round ends with one of two outcomes and nothing in between: the VM exists and its row,
process and disk agree, or it is gone with its process, disk, lock and quota.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TCG_SCALE, Api, auth, kill_all_vms, make_settings, running_api
from tests.faults.conftest import Http, assert_consistent, metric, qemu_pids
from tests.integration.conftest import TINY_VM
from voidvm_server.drivers.qemu.driver import QemuDriver

pytestmark = pytest.mark.qemu


@asynccontextmanager
async def race_app(tmp_path: Path, tiny: tuple[Path, Path]) -> AsyncIterator[tuple[Api, Http]]:
    settings = make_settings(tmp_path, stop_timeout_seconds=30 * TCG_SCALE)
    async with running_api(settings, None, tiny) as api:
        token = await api.login()
        api.client.headers.update(auth(token))
        api.client.base_url = api.client.base_url.join("/api/v1/")
        try:
            yield api, Http(api.client)
        finally:
            await kill_all_vms(api.container)


# (start body, delete force, which goes first: "start", "delete" or "together")
ROUNDS: list[tuple[dict[str, Any], bool, str]] = [
    ({}, False, "together"),
    ({}, True, "together"),
    ({"wait": False}, True, "together"),
    ({}, False, "start"),
    ({}, True, "start"),
    ({"wait": False}, False, "start"),
    ({}, False, "delete"),
    ({}, True, "delete"),
]


async def test_concurrent_start_and_delete_are_serialized(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    async with race_app(tmp_path, tiny_image) as (api, http):
        data_dir = api.container.settings.data_dir
        outcomes: dict[str, int] = {}
        for n, (start_body, force, first) in enumerate(ROUNDS * 2):
            vm_id = (await http.create_vm(f"race-{n}"))["id"]
            start = http.client.post(f"vms/{vm_id}/start", json=start_body)
            delete = http.client.delete(f"vms/{vm_id}", params={"force": str(force).lower()})
            if first == "together":
                started, deleted = await asyncio.gather(start, delete)
            else:
                one, two = (start, delete) if first == "start" else (delete, start)
                task = asyncio.ensure_future(one)
                await asyncio.sleep(0.05 if first == "start" else 0.005)  # the first is under way
                second = await two
                first_answer = await task
                started, deleted = (first_answer, second) if first == "start" else (second, first_answer)
            key = f"start={started.status_code} delete={deleted.status_code}"
            outcomes[key] = outcomes.get(key, 0) + 1
            exists = (await http.client.get(f"vms/{vm_id}")).status_code == 200
            if deleted.status_code == 200:
                # Delete won (or, forced, came second and stopped it): everything is gone.
                assert not exists and started.status_code in (200, 202, 404), key
                assert qemu_pids(vm_id) == [] and not (data_dir / "vms" / vm_id).exists()
                assert vm_id not in api.container.vms._locks  # no lock left behind
            else:
                # Start won and the delete was refused because the VM runs.
                assert deleted.status_code == 409 and deleted.json()["error"]["code"] in (
                    "INVALID_STATE", "OPERATION_IN_PROGRESS"), key  # fmt: skip
                assert exists and started.status_code in (200, 202), key
                await http.wait_status(vm_id, "running")
                await http.delete(vm_id, force=True)
            await assert_consistent(http, data_dir)
        metric("start_delete_race_outcomes", outcomes)
        assert await http.vms() == []
        assert (await http.usage())["vms"] == 0


async def test_a_forced_delete_during_a_create_waits_for_the_disk(
    tmp_path: Path, tiny_image: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM shows up (status `creating`) before its disk exists; a forced delete at that moment
    must neither race the disk creation nor release the quota twice. qemu-img is slowed down
    (as on a busy host) so that the delete surely arrives while the disk is being written."""
    async with race_app(tmp_path, tiny_image) as (api, http):
        data_dir = api.container.settings.data_dir
        driver = api.container.agent.driver
        assert isinstance(driver, QemuDriver)
        create_blank = driver.img.create_blank

        async def slow_create_blank(disk: Path, size: int) -> None:
            await asyncio.sleep(0.1)
            await create_blank(disk, size)
            await asyncio.sleep(0.3)

        monkeypatch.setattr(driver.img, "create_blank", slow_create_blank)
        queue, unsubscribe = api.container.bus.queue()
        try:
            for n in range(5):
                create = asyncio.ensure_future(http.client.post("vms", json={"name": f"c{n}", **TINY_VM}))
                async with asyncio.timeout(10):
                    while True:
                        event = await queue.get()
                        if event.kind == "vm-status" and event.data["status"] == "creating":
                            break
                assert event.vm_id is not None
                deleted = await http.client.delete(f"vms/{event.vm_id}", params={"force": "true"})
                created = await create
                assert created.status_code == 201, created.text
                assert deleted.status_code == 200, deleted.text
                assert (await http.client.get(f"vms/{event.vm_id}")).status_code == 404
                assert not (data_dir / "vms" / event.vm_id).exists()
                await assert_consistent(http, data_dir)
                assert (await http.usage())["vms"] == 0
        finally:
            unsubscribe()
