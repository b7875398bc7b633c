"""The bounded console log: rotation at the cap, reading its tail, and the API that serves it."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Api, auth, make_settings, running_api
from voidvm_server.config import Settings
from voidvm_server.drivers.console_log import (
    ConsoleLimits,
    RotatingLog,
    previous_log,
    previous_run_log,
    read_tail,
    start_new_log,
)
from voidvm_server.drivers.fake import FakeDriver

CAP = 4096


def stream(n: int) -> bytes:
    """Numbered lines, so that any gap or repetition in a suffix of it shows."""
    return b"".join(b"line %06d\r\n" % i for i in range(n))


def test_the_log_rotates_at_its_cap_and_keeps_the_output_before_it(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    log = RotatingLog(path, CAP)
    written = stream(2000)  # 26 KB: six rotations
    for offset in range(0, len(written), 1000):
        log.append(written[offset : offset + 1000])
        assert path.stat().st_size <= CAP
        assert not previous_log(path).exists() or previous_log(path).stat().st_size <= CAP
    log.close()
    kept, size = read_tail(path, 10 * CAP)
    assert size == len(kept) <= 2 * CAP
    assert len(kept) > CAP  # after a rotation the two files hold more than the cap
    assert written.endswith(kept)  # a contiguous suffix: nothing lost or repeated inside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["console.log", "console.log.1"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_chunk_bigger_than_the_cap_keeps_only_its_end(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    log = RotatingLog(path, CAP)
    log.append(b"old\n")
    log.append(b"x" * (3 * CAP) + b"the end")
    log.close()
    assert path.read_bytes() == (b"x" * (3 * CAP) + b"the end")[-CAP:]
    assert previous_log(path).read_bytes() == b"old\n"


def test_the_tail_spans_both_files_and_a_limit_takes_only_the_newest_bytes(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    previous_log(path).write_bytes(b"older-")
    path.write_bytes(b"newer")
    assert read_tail(path, 1000) == (b"older-newer", 11)
    assert read_tail(path, 7) == (b"r-newer", 11)
    assert read_tail(path, 3) == (b"wer", 11)
    assert read_tail(tmp_path / "none.log", 10) == (b"", 0)


def test_a_log_rotated_while_it_is_read_is_not_counted_twice(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    path.write_bytes(b"only once")
    os.link(path, previous_log(path))  # console.log.1 is the very file console.log was a moment ago
    assert read_tail(path, 100) == (b"only once", 9)


def test_a_new_run_starts_empty_and_keeps_the_end_of_the_last_run_aside(tmp_path: Path) -> None:
    path = tmp_path / "console.log"
    previous_run_log(path).write_bytes(b"two runs ago")
    previous_log(path).write_bytes(b"last run, early")
    path.write_bytes(b"last run, late")
    start_new_log(path)
    assert previous_run_log(path).name == "console.previous.log"
    assert previous_run_log(path).read_bytes() == b"last run, late"
    assert not path.exists() and not previous_log(path).exists()
    assert read_tail(path, 100) == (b"", 0)  # the saved output is the new run's only
    start_new_log(path)  # nothing to move: no error, the last run's end stays
    assert previous_run_log(path).read_bytes() == b"last run, late"


def test_a_full_disk_loses_that_chunk_only_and_the_log_stays_within_its_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "console.log"
    log = RotatingLog(path, CAP)
    log.append(b"a" * 3000)
    real_write = os.write

    def full(fd: int, data: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as raised:
        log.append(b"b" * 500)
    assert raised.value.errno == errno.ENOSPC
    monkeypatch.setattr(os, "write", real_write)
    log.append(b"c" * 1500)  # 3000 + 1500 > cap: rotates, as the size it tracks is still right
    log.close()
    assert path.read_bytes() == b"c" * 1500 and previous_log(path).read_bytes() == b"a" * 3000


# -- the API ------------------------------------------------------------------------------------
@pytest.fixture
async def small_log_api(tmp_path: Path) -> AsyncIterator[Api]:
    def factory(settings: Settings, data_dir: Path) -> FakeDriver:
        return FakeDriver(data_dir, ConsoleLimits(log_max_bytes=settings.console_log_max_bytes))

    async with running_api(make_settings(tmp_path, console_log_max_bytes=CAP), factory, None) as api:
        yield api


async def test_console_log_endpoint_serves_the_recent_output_of_a_rotated_log(small_log_api: Api) -> None:
    api = small_log_api
    token = await api.login()
    created = await api.client.post(
        "/api/v1/vms", json={"name": "chatty", "cpu": 1, "memory": 128, "disk": 1}, headers=auth(token)
    )
    vm_id = created.json()["data"]["id"]
    assert (await api.client.post(f"/api/v1/vms/{vm_id}/start", headers=auth(token))).status_code == 200
    driver = api.container.agent.driver
    assert isinstance(driver, FakeDriver)
    written = stream(3000)
    for offset in range(0, len(written), 700):
        driver.guest_prints(vm_id, written[offset : offset + 700])
    response = await api.client.get(f"/api/v1/vms/{vm_id}/console/log", headers=auth(token))
    data = response.json()["data"]
    assert response.status_code == 200 and data["truncated"] is False
    assert CAP < data["size"] <= 2 * CAP
    assert written.decode().endswith(data["log"]) and data["log"].endswith("line 002999\r\n")
    tail = await api.client.get(f"/api/v1/vms/{vm_id}/console/log", params={"tail": 100}, headers=auth(token))
    assert tail.json()["data"] == {"log": written[-100:].decode(), "size": data["size"], "truncated": True}


def test_the_cap_has_a_floor() -> None:
    with pytest.raises(ValueError):
        Settings(console_log_max_bytes=100)
