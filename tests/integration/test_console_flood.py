"""A guest flooding its serial port cannot fill the host's disk (issue 12): real QEMU, tiny guest.

The log is capped (`console_log_max_bytes`, here 256 KiB) with one rotated predecessor; the guest
writes six times the cap as fast as its UART goes, and the files never pass the cap while it does.
A viewer attached meanwhile gets every byte (the cap drops no live output and the guest is not
cut off), and the saved log still ends with the most recent output.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TCG_SCALE, Api, auth, kill_all_vms, make_settings, running_api
from tests.integration.conftest import (
    READY_LINE,
    action,
    console_tap,
    create_vm,
    poll,
    serial_run,
    wait_console,
)
from voidvm_server.drivers.console_log import previous_log

pytestmark = pytest.mark.qemu
CAP = 256 * 1024
LINE = "A" * 40  # 42 bytes a line on the wire (the tty turns \n into \r\n)
LINES = 6 * CAP // 41
FLOOD_TIMEOUT = 120 * TCG_SCALE


async def test_a_guest_flooding_its_serial_port_keeps_the_log_at_its_cap(
    tmp_path: Path, tiny_image: tuple[Path, Path]
) -> None:
    settings = make_settings(tmp_path, console_log_max_bytes=CAP, stop_timeout_seconds=30 * TCG_SCALE)
    async with running_api(settings, None, tiny_image) as api:
        try:
            await _flood(api)
        finally:
            await kill_all_vms(api.container)


async def _flood(api: Api) -> None:
    token = await api.login()
    vm_id = (await create_vm(api, token, "flood"))["id"]
    await action(api, token, vm_id, "start")
    await wait_console(api, token, vm_id, READY_LINE)
    log = api.container.agent.driver.console_log(vm_id)
    largest = 0

    def within_cap() -> None:
        nonlocal largest
        for path in (log, previous_log(log)):
            size = path.stat().st_size if path.exists() else 0
            assert size <= CAP, f"{path.name} holds {size} bytes, over the {CAP} cap"
            largest = max(largest, size)

    async with console_tap(api, vm_id) as tap:
        command = f"\nyes {LINE} | head -n {LINES}; echo flood-$((40+2))-done\n"
        await api.container.consoles.write(vm_id, command.encode())

        async def flood_over() -> bool:
            within_cap()  # checked all along the flood, not only at its end
            return b"flood-42-done" in tap.output

        await poll(flood_over, timeout=FLOOD_TIMEOUT, interval=0.05, what="the end of the flood")
        within_cap()
        seen = tap.output.count(f"{LINE}\r\n".encode())
    assert seen == LINES, f"the viewer got {seen} of {LINES} lines: output was dropped"
    assert largest > CAP // 2  # the log really filled up to near its cap and rotated
    assert sorted(p.name for p in log.parent.glob("console.log*")) == ["console.log", "console.log.1"]

    response = await api.client.get(
        f"/api/v1/vms/{vm_id}/console/log", params={"tail": 4 * CAP}, headers=auth(token)
    )
    data = response.json()["data"]
    assert CAP < data["size"] <= 2 * CAP and data["truncated"] is False
    recent = data["log"].replace("\r", "")
    assert "flood-42-done\n" in recent
    body = recent.split("flood-42-done")[0].split("\n")[1:-1]  # whole lines only
    assert len(body) > CAP // 2 // 42 and set(body) == {LINE}, set(body) - {LINE}
    # The guest was slowed down, never stopped: its shell still answers.
    assert await serial_run(api, vm_id, "echo still-$((6*7))") == "still-42"
