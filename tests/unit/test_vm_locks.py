"""VMLocks: one action at a time per VM, across processes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from voidvm_server.services.vm_locks import VMLocks

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


async def test_two_workers_take_turns_on_one_vm(tmp_path: Path) -> None:
    # Two VMLocks on one directory stand for two API worker processes: separate file locks.
    one, two = VMLocks(tmp_path), VMLocks(tmp_path)
    inside: list[str] = []

    async def act(locks: VMLocks, name: str) -> None:
        async with locks("vm-000000000001"):
            inside.append(f"{name} in")
            await asyncio.sleep(0.05)
            inside.append(f"{name} out")

    await asyncio.gather(act(one, "a"), act(two, "b"), act(one, "c"), act(two, "d"))
    pairs = [inside[i : i + 2] for i in range(0, len(inside), 2)]
    assert all(p[0].split()[0] == p[1].split()[0] for p in pairs) and len(pairs) == 4  # never interleaved


async def test_another_process_holding_the_lock_is_waited_for_and_a_waiter_can_be_cancelled(
    tmp_path: Path,
) -> None:
    locks = VMLocks(tmp_path)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLD, str(tmp_path / "vm-000000000002.lock"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and (await holder.stdout.readline()).strip() == b"held"
        waiter = asyncio.create_task(locks("vm-000000000002").acquire())
        await asyncio.sleep(0.2)
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not locks("vm-000000000002").locked()  # the cancelled waiter holds nothing
        taking = asyncio.create_task(locks("vm-000000000002").acquire())
        await asyncio.sleep(0.1)
        assert not taking.done()
        holder.kill()  # a process that dies releases its lock with its descriptors
        await holder.wait()
        await asyncio.wait_for(taking, 10)
        locks("vm-000000000002").release()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_a_deleted_vms_lock_file_goes(tmp_path: Path) -> None:
    locks = VMLocks(tmp_path)
    async with locks("vm-000000000003"):
        pass
    assert (tmp_path / "vm-000000000003.lock").exists()
    locks.forget("vm-000000000003", deleted=True)
    assert "vm-000000000003" not in locks and not (tmp_path / "vm-000000000003.lock").exists()
