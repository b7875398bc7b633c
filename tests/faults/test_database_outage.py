"""A database outage at the worst moments, made deterministic (complements case 8).

The PostgreSQL test cuts the database at a random moment for many requests; this one cuts it
exactly between a side effect and the write that records it: after a create's disk is made, and
while a VM's QEMU dies. The database handle refuses every session and every read during the outage exactly
as `Database.session()` does when it cannot get a connection (503 SERVICE_UNAVAILABLE). Once it is back,
the server must put those VMs right by itself, without a restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import TCG_SCALE, auth, kill_all_vms, make_settings, running_api
from tests.faults.conftest import Http, assert_consistent, poll, qemu_pids
from voidvm_server.drivers.base import BootMedia
from voidvm_server.drivers.qemu.driver import QemuDriver
from voidvm_server.persistence.engine import unavailable

pytestmark = pytest.mark.qemu


async def test_state_changes_lost_to_a_database_outage_are_put_right_when_it_returns(
    tmp_path: Path, tiny_image: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, stop_timeout_seconds=30 * TCG_SCALE)
    async with running_api(settings, None, tiny_image) as api:
        try:
            token = await api.login()
            api.client.headers.update(auth(token))
            api.client.base_url = api.client.base_url.join("/api/v1/")
            http = Http(api.client)
            db, driver = api.container.db, api.container.agent.driver
            assert isinstance(driver, QemuDriver)
            outage = asyncio.Event()

            def refused_during_outage(unit_of_work: Any) -> Any:
                @asynccontextmanager
                async def guarded() -> AsyncIterator[AsyncSession]:
                    if outage.is_set():
                        raise unavailable()
                    async with unit_of_work() as s:
                        yield s

                return guarded

            # Both ways in: units of work, and the stand-alone reads.
            monkeypatch.setattr(db, "session", refused_during_outage(db.session))
            monkeypatch.setattr(db, "reading", refused_during_outage(db.reading))

            # A VM that will die during the outage, and one that must not be touched.
            victim = (await http.create_vm("dies-unrecorded"))["id"]
            await http.action(victim, "start")
            pid = (await http.live(victim))["pid"]
            bystander = (await http.create_vm("bystander"))["id"]

            # The database goes away right after a create has made its disk.
            prepare_disk = driver.prepare_disk

            async def then_outage(vm_id: str, media: BootMedia, size_gb: int) -> None:
                await prepare_disk(vm_id, media, size_gb)
                outage.set()

            monkeypatch.setattr(driver, "prepare_disk", then_outage)
            response = await http.client.post(
                "vms", json={"name": "half-made", "cpu": 1, "memory": 64, "disk": 1}
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert response.headers["retry-after"]
            monkeypatch.setattr(driver, "prepare_disk", prepare_disk)
            half_made = [p.name for p in driver.vms_dir.iterdir() if p.name not in {victim, bystander}]
            assert len(half_made) == 1  # its row says `creating` and its disk exists

            # ... and while it is away, the victim's QEMU dies.
            os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(1.0)  # the exit is seen, its record refused
            assert (await http.client.get("vms")).status_code == 503
            outage.clear()

            # Back: no restart, and within a few seconds everything agrees again.
            async def settled() -> list[dict[str, Any]] | None:
                try:
                    return await assert_consistent(http, settings.data_dir)
                except AssertionError:
                    return None

            vms = await poll(settled, timeout=20, interval=0.25, what="the VMs to be put right")
            by_id = {vm["id"]: vm for vm in vms}
            # The create whose client was told 503 is undone: no row, no disk, no quota.
            assert set(by_id) == {victim, bystander}
            assert not (driver.vms_dir / half_made[0]).exists()
            assert (await http.usage())["vms"] == 2
            # The death that could not be recorded is recorded now.
            assert by_id[victim]["status"] == "error"
            assert "while the database was unavailable" in by_id[victim]["status_reason"]
            assert qemu_pids(victim) == []
            assert by_id[bystander]["status"] == "stopped"
            await http.action(victim, "start")  # and it is usable again
            await http.action(victim, "stop", force=True)
        finally:
            await kill_all_vms(api.container)
