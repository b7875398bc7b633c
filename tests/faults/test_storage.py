"""The VM storage full or read-only during a create (issue #7, case 5).

Real where the machine allows it: as root a tiny tmpfs (full) or a read-only mount is put over
`<data>/vms` (or over the whole data dir) while the server runs. Without mount privileges the
full/read-only disk is simulated by making qemu-img fail with ENOSPC/EROFS, and the test says so.

The contract: 507 with a stable code (STORAGE_FULL, STORAGE_READ_ONLY) and no host path or
stack trace in the answer; nothing of the VM left on disk or in the database; quota unchanged;
the next create after the space comes back works. A read-only *database* is a 503
SERVICE_UNAVAILABLE (the database cannot take writes), with the same guarantees.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, auth, kill_all_vms, make_settings, running_api
from tests.faults.conftest import metric, poll
from tests.integration.conftest import TINY_VM
from voidvm_server.drivers.qemu.driver import QemuDriver

pytestmark = pytest.mark.qemu


def _mount(*argv: str) -> bool:
    result = subprocess.run(["mount", *argv], capture_output=True, timeout=30, check=False)
    return result.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30, check=False)


def fill(directory: Path) -> None:
    """Write a file until the filesystem has not one block left."""
    with contextlib.suppress(OSError), (directory / "filler").open("wb", buffering=0) as handle:
        while True:
            handle.write(b"\0" * 65536)
    with contextlib.suppress(OSError), (directory / "filler-small").open("wb", buffering=0) as handle:
        while True:
            handle.write(b"\0" * 512)


@contextlib.contextmanager
def full_disk(target: Path) -> Iterator[str]:
    """`target` on a 1 MiB tmpfs filled to the last block (or a simulation without privileges)."""
    if os.geteuid() == 0 and _mount("-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(target)):
        try:
            fill(target)
            yield "tmpfs"
        finally:
            _umount(target)
    else:
        yield "simulated"


@contextlib.contextmanager
def read_only(target: Path) -> Iterator[str]:
    """`target` bind-mounted read-only onto itself (or a simulation without privileges)."""
    if os.geteuid() == 0 and _mount("--bind", str(target), str(target)):
        try:
            if not _mount("-o", "remount,bind,ro", str(target)):
                raise RuntimeError("could not remount read-only")
            yield "bind-ro"
        finally:
            _umount(target)
    else:
        yield "simulated"


@asynccontextmanager
async def storage_app(tmp_path: Path, tiny: tuple[Path, Path]) -> AsyncIterator[Api]:
    async with running_api(make_settings(tmp_path), None, tiny) as api:
        try:
            yield api
        finally:
            await kill_all_vms(api.container)


def simulate(api: Api, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """What qemu-img reports on a full or read-only disk, for machines where we cannot mount."""
    driver = api.container.driver
    assert isinstance(driver, QemuDriver)

    async def failing(disk: Path, size: int) -> None:
        raise OSError(code, os.strerror(code), str(disk))

    monkeypatch.setattr(driver.img, "create_blank", failing)


async def state(api: Api, token: str) -> dict[str, Any]:
    me = await api.client.get("/api/v1/auth/me", headers=auth(token))
    vms = await api.client.get("/api/v1/vms", headers=auth(token))
    return {"usage": me.json()["data"]["usage"], "vms": vms.json()["data"]["pagination"]["total"]}


async def refused_create(api: Api, token: str, status: int, code: str) -> dict[str, Any]:
    response = await api.client.post("/api/v1/vms", json={"name": "no-room", **TINY_VM}, headers=auth(token))
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False and body["error"]["code"] == code, body
    assert str(api.container.settings.data_dir) not in response.text
    assert "/tmp" not in response.text and "Traceback" not in response.text
    assert "details" not in body["error"] or not body["error"]["details"]
    return body


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("full", 507, "STORAGE_FULL"), ("read-only", 507, "STORAGE_READ_ONLY")],
)
async def test_vm_storage_full_or_read_only_during_a_create(
    tmp_path: Path, tiny_image: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
    fault: str, status: int, code: str,
) -> None:  # fmt: skip
    async with storage_app(tmp_path, tiny_image) as api:
        token = await api.login()
        vms_dir = api.container.driver.vms_dir  # type: ignore[attr-defined]
        before = await state(api, token)
        with (full_disk if fault == "full" else read_only)(vms_dir) as how:
            metric(f"storage_{fault}_mode", how)
            if how == "simulated":
                simulate(api, monkeypatch, errno.ENOSPC if fault == "full" else errno.EROFS)
            body = await refused_create(api, token, status, code)
            assert await state(api, token) == before  # no row, no quota taken
            leftovers = {p.name for p in vms_dir.iterdir()} - {"filler", "filler-small"}
            assert leftovers == set(), leftovers  # no run dir, no partial disk
            # The audit log records the failure without a path either.
            logs = await api.client.get("/api/v1/logs", params={"action": "vm.create"}, headers=auth(token))
            entry = logs.json()["data"]["logs"][0]
            assert entry["result"] == "failure" and str(tmp_path) not in str(entry), entry
        monkeypatch.undo()
        assert body["error"]["message"]
        # Space (or write access) is back: the same create now works.
        response = await api.client.post(
            "/api/v1/vms", json={"name": "no-room", **TINY_VM}, headers=auth(token)
        )
        assert response.status_code == 201, response.text
        assert (vms_dir / response.json()["data"]["id"] / "disk.qcow2").is_file()


async def test_a_full_data_dir_with_the_database_in_it(tmp_path: Path, tiny_image: tuple[Path, Path]) -> None:
    """The whole data dir (SQLite database included) on a tmpfs that fills up: whichever write
    fails first (the database's or the disk's), the answer is 507 STORAGE_FULL and nothing
    half-done stays behind, in the database or on disk."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(data_dir)):
        pytest.skip("tmpfs cannot be mounted here")
    try:
        async with storage_app(data_dir, tiny_image) as api:
            token = await api.login()
            before = await state(api, token)
            fill(data_dir)
            answers = set()
            for _ in range(3):
                body = await refused_create(api, token, 507, "STORAGE_FULL")
                answers.add(body["error"]["message"])
            metric("full_data_dir_answers", sorted(answers))
            assert await state(api, token) == before
            assert list((data_dir / "vms").iterdir()) == []
            for filler in data_dir.glob("filler*"):
                filler.unlink()
            # A create whose undo the full database refused is undone once there is room.
            await poll(lambda: _settled(api, token, before), timeout=15, what="the quota to be back")
            response = await api.client.post(
                "/api/v1/vms", json={"name": "later", **TINY_VM}, headers=auth(token)
            )
            assert response.status_code == 201, response.text
    finally:
        _umount(data_dir)


async def _settled(api: Api, token: str, before: dict[str, Any]) -> bool:
    return await state(api, token) == before
