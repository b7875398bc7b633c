"""The data directory is owner-only, even when an operator created it with looser modes: other
local users read no password hash, token, disk or console, and reach no socket."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.conftest import auth, fake_driver_factory, make_settings, running_api
from tests.integration.conftest import BOOT_TIMEOUT, READY_LINE, TINY_VM, console_log, poll


def loose_entries(root: Path) -> list[str]:
    """Every path under `root` (itself included) that its group or others may use at all."""
    found = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if stat.S_IMODE(path.lstat().st_mode) & 0o077:
            found.append(f"{path.relative_to(root)} {oct(stat.S_IMODE(path.lstat().st_mode))}")
    return found


async def test_a_pre_created_0755_data_dir_is_made_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    old_db = data / "voidvm.db"
    sqlite3.connect(old_db).close()  # left by an earlier install, world-readable
    old_db.chmod(0o644)
    previous = os.umask(0o022)  # a typical shell's umask
    try:
        settings = make_settings(data, jwt_secret=None)
        async with running_api(settings, fake_driver_factory, None) as api:
            token = await api.login()
            created = await api.client.post(
                "/api/v1/vms", json={"name": "files", "cpu": 1, "memory": 128, "disk": 1}, headers=auth(token)
            )
            assert created.status_code == 201
            assert stat.S_IMODE(data.stat().st_mode) == 0o700
            assert stat.S_IMODE(old_db.stat().st_mode) == 0o600
            assert stat.S_IMODE((data / "jwt-secret").stat().st_mode) == 0o600
            assert loose_entries(data) == []
    finally:
        os.umask(previous)


@pytest.mark.qemu
async def test_a_running_vms_files_and_sockets_are_owner_only(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    from tests.conftest import kill_all_vms

    previous = os.umask(0o022)
    try:
        async with running_api(make_settings(tmp_path / "data"), None, tiny_image) as api:
            try:
                token = await api.login()
                vm = (
                    await api.client.post(
                        "/api/v1/vms", json={"name": "socks", **TINY_VM}, headers=auth(token)
                    )
                ).json()["data"]
                started = await api.client.post(f"/api/v1/vms/{vm['id']}/start", headers=auth(token))
                assert started.status_code == 200, started.text

                async def ready() -> bool:
                    return READY_LINE in await console_log(api, token, vm["id"])

                await poll(ready, timeout=BOOT_TIMEOUT, what="the guest to boot")
                run_dir = api.container.agent.driver.run_dir(vm["id"])
                sockets = [p for p in run_dir.iterdir() if stat.S_ISSOCK(p.lstat().st_mode)]
                assert {p.name for p in sockets} >= {"qmp.sock", "serial.sock", "vnc.sock"}
                assert loose_entries(tmp_path / "data") == []
            finally:
                await kill_all_vms(api.container)
    finally:
        os.umask(previous)
