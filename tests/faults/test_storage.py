"""The VM storage full or read-only during a create (issue #7, case 5), and the host disk a guest
must not fill (issue #12): the free-space reserve and a running VM's writes finding the disk full.

Real where the machine allows it: as root a tiny tmpfs (full) or a read-only mount is put over
`<data>/vms` (or over the whole data dir) while the server runs. Without mount privileges the
full/read-only disk is simulated by making qemu-img fail with ENOSPC/EROFS, and the test says so.

The contract: 507 with a stable code (STORAGE_FULL, STORAGE_READ_ONLY) and no host path or
stack trace in the answer; nothing of the VM left on disk or in the database; quota unchanged;
the next create after the space comes back works. A read-only *database* is a 503
SERVICE_UNAVAILABLE (the database cannot take writes), with the same guarantees. Those cases run
with the reserve off: they are what a write meets when the disk fills between the check and it.

Under the reserve (a 64 MiB tmpfs, 32 MB reserve) a create, a disk growth and a start answer 507
INSUFFICIENT_STORAGE and change nothing. A running VM whose disk writes find its tmpfs full is
paused with the reason, its image checks clean, and once there is room it resumes and its data is
whole.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TCG_SCALE, Api, auth, kill_all_vms, make_settings, running_api
from tests.faults.conftest import metric, poll
from tests.integration.conftest import (
    READY_LINE,
    TINY_VM,
    console_tap,
    qemu_pids,
    serial_run,
    wait_console,
    wait_status,
)
from voidvm_server.drivers.base import DISK_FULL_REASON
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
async def storage_app(tmp_path: Path, tiny: tuple[Path, Path], reserve_mb: int = 0) -> AsyncIterator[Api]:
    settings = make_settings(tmp_path, disk_reserve_mb=reserve_mb, stop_timeout_seconds=30 * TCG_SCALE)
    async with running_api(settings, None, tiny) as api:
        try:
            yield api
        finally:
            await kill_all_vms(api.container)


def simulate(api: Api, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """What qemu-img reports on a full or read-only disk, for machines where we cannot mount."""
    driver = api.container.agent.driver
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
        vms_dir = api.container.agent.driver.vms_dir  # type: ignore[attr-defined]
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


# -- issue #12: the host's disk and the VMs that write to it -------------------------------------------
MIB = 1024**2


@contextlib.contextmanager
def small_tmpfs(target: Path, size_mb: int) -> Iterator[None]:
    """`target` on a tmpfs of `size_mb` (root only; the test is skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    if not _mount("-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(target)):
        pytest.skip("tmpfs cannot be mounted here")
    try:
        yield
    finally:
        _umount(target)


def fill_leaving(directory: Path, free: int) -> Path:
    """Write a file that leaves about `free` bytes free on `directory`'s filesystem."""
    st = os.statvfs(directory)
    filler = directory / "filler"
    with filler.open("wb") as handle:
        handle.truncate(0)
        remaining = st.f_bavail * st.f_frsize - free
        while remaining > 0:
            remaining -= handle.write(b"\0" * min(remaining, 4 * MIB))
    return filler


def qemu_img_check(disk: Path, *, shared: bool = False) -> dict[str, Any]:
    """`qemu-img check` of a VM's disk; `shared` reads it while its QEMU has it open."""
    argv = ["qemu-img", "check", "--output=json", *(["-U"] if shared else []), str(disk)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["check-errors"] == 0 and not report.get("corruptions") and not report.get("leaks"), report
    return report


def virtual_size(disk: Path) -> int:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)], capture_output=True,
                         text=True, timeout=30, check=True)  # fmt: skip
    return int(json.loads(out.stdout)["virtual-size"])


async def vm_state(api: Api, token: str, vm_id: str) -> dict[str, Any]:
    response = await api.client.get(f"/api/v1/vms/{vm_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    vm: dict[str, Any] = response.json()["data"]
    return vm


async def test_create_grow_and_start_answer_507_under_the_reserve(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    async with storage_app(tmp_path, tiny_image, reserve_mb=32) as api:
        token = await api.login()
        vms_dir = api.container.agent.driver.vms_dir  # type: ignore[attr-defined]
        with small_tmpfs(vms_dir, 64):
            try:
                kept = await api.client.post(
                    "/api/v1/vms", json={"name": "kept", **TINY_VM}, headers=auth(token)
                )
                assert kept.status_code == 201, kept.text  # 64 MiB free: above the reserve
                vm_id = kept.json()["data"]["id"]
                disk = vms_dir / vm_id / "disk.qcow2"
                filler = fill_leaving(vms_dir, 16 * MIB)
                before = await state(api, token)
                run_dirs = {p.name for p in vms_dir.iterdir()}

                await refused_create(api, token, 507, "INSUFFICIENT_STORAGE")
                grow = await api.client.patch(f"/api/v1/vms/{vm_id}", json={"disk": 2}, headers=auth(token))
                assert grow.status_code == 507 and grow.json()["error"]["code"] == "INSUFFICIENT_STORAGE"
                start = await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))
                assert start.status_code == 507 and start.json()["error"]["code"] == "INSUFFICIENT_STORAGE"
                metric("reserve_refusal_message", start.json()["error"]["message"])

                # Nothing half-done: no row, no quota, no file, the disk as it was, no QEMU.
                assert await state(api, token) == before
                assert {p.name for p in vms_dir.iterdir()} == run_dirs
                vm = await vm_state(api, token, vm_id)
                assert (vm["status"], vm["disk"], vm["status_reason"]) == ("stopped", 1, None)
                assert virtual_size(disk) == 1024**3 and qemu_pids(vm_id) == []

                filler.unlink()  # room again: the same requests go through
                grow = await api.client.patch(f"/api/v1/vms/{vm_id}", json={"disk": 2}, headers=auth(token))
                assert grow.status_code == 200, grow.text
                assert virtual_size(disk) == 2 * 1024**3
                start = await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))
                assert start.status_code == 200 and start.json()["data"]["status"] == "running", start.text
                other = await api.client.post(
                    "/api/v1/vms", json={"name": "later", **TINY_VM}, headers=auth(token)
                )
                assert other.status_code == 201, other.text
            finally:
                await kill_all_vms(api.container)


PATTERN_MIB = 24


async def test_a_vm_whose_disk_writes_find_the_host_disk_full_is_paused_and_resumes_intact(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    async with storage_app(tmp_path, tiny_image, reserve_mb=8) as api:
        token = await api.login()
        vms_dir = api.container.agent.driver.vms_dir  # type: ignore[attr-defined]
        with small_tmpfs(vms_dir, 96):
            try:
                await _fill_the_disk_under_a_running_vm(api, token, vms_dir)
            finally:
                await kill_all_vms(api.container)


async def _fill_the_disk_under_a_running_vm(api: Api, token: str, vms_dir: Path) -> None:
    created = await api.client.post("/api/v1/vms", json={"name": "writer", **TINY_VM}, headers=auth(token))
    assert created.status_code == 201, created.text
    vm_id = created.json()["data"]["id"]
    disk = vms_dir / vm_id / "disk.qcow2"
    assert (await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))).status_code == 200
    await wait_console(api, token, vm_id, READY_LINE)
    pattern = await serial_run(
        api, vm_id, f"head -c {PATTERN_MIB * MIB} /dev/urandom > /tmp/pattern && md5sum < /tmp/pattern",
        timeout=120 * TCG_SCALE,
    )  # fmt: skip
    allocated = await allocated_bytes(api, token, vm_id)
    filler = fill_leaving(vms_dir, 8 * MIB)  # less than the guest is about to write

    # The guest writes its data disk; its writes find the host disk full.
    async with console_tap(api, vm_id) as tap:
        await api.container.consoles.write(
            vm_id, b"dd if=/tmp/pattern of=/dev/vda bs=1M conv=fsync; echo dd-$((40+2))-done\n"
        )
        vm = await wait_status(api, token, vm_id, "paused", timeout=120 * TCG_SCALE)
        assert vm["status_reason"] == DISK_FULL_REASON
        live = (await api.client.get(f"/api/v1/vms/{vm_id}/status", headers=auth(token))).json()["data"]
        assert live["qemu_status"] == "io-error" and live["status_reason"] == DISK_FULL_REASON
        assert b"dd-42-done" not in tap.output  # the guest never saw its write fail
        assert await allocated_bytes(api, token, vm_id) > allocated  # the disk grew to the host's limit
        report = qemu_img_check(disk, shared=True)  # consistent while paused
        metric("paused_image", {k: report[k] for k in ("allocated-clusters", "image-end-offset")})

        filler.unlink()
        resumed = await api.client.post(f"/api/v1/vms/{vm_id}/resume", headers=auth(token))
        assert resumed.status_code == 200, resumed.text
        assert (resumed.json()["data"]["status"], resumed.json()["data"]["status_reason"]) == (
            "running",
            None,
        )
        await tap.until(b"dd-42-done", 120 * TCG_SCALE)  # the write that was held is done now
    # Every byte of it reached the disk: read back from the device, not the guest's cache.
    written = await serial_run(
        api, vm_id, f"echo 3 > /proc/sys/vm/drop_caches; head -c {PATTERN_MIB * MIB} /dev/vda | md5sum",
        timeout=120 * TCG_SCALE,
    )  # fmt: skip
    assert written.split()[0] == pattern.split()[0]
    assert await allocated_bytes(api, token, vm_id) >= PATTERN_MIB * MIB

    stopped = await api.client.post(f"/api/v1/vms/{vm_id}/stop", json={"force": True}, headers=auth(token))
    assert stopped.status_code == 200, stopped.text
    qemu_img_check(disk)


async def allocated_bytes(api: Api, token: str, vm_id: str) -> int:
    response = await api.client.get(f"/api/v1/vms/{vm_id}/metrics", headers=auth(token))
    assert response.status_code == 200, response.text
    value: int = response.json()["data"]["disk"]["allocated_bytes"]
    return value
