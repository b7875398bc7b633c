"""The classification behind the fault answers: which failures are 507, which 503, which stay 500."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import Api, auth
from voidvm_server.drivers.qemu.driver import storage_problem
from voidvm_server.errors import DriverError
from voidvm_server.persistence.engine import Database, database_storage_problem, database_unavailable


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "STORAGE_FULL"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "STORAGE_FULL"),
        (OSError(errno.EROFS, "Read-only file system"), "STORAGE_READ_ONLY"),
        (
            DriverError("x", details=f"Could not write qcow2 header: {os.strerror(errno.ENOSPC)}"),
            "STORAGE_FULL",
        ),
        (DriverError("x", details=f"Could not create: {os.strerror(errno.EROFS)}"), "STORAGE_READ_ONLY"),
        (DriverError("x", details="Image is not in qcow2 format"), None),
        (OSError(errno.ENOENT, "No such file"), None),
        (ValueError("no"), None),
    ],
)
def test_disk_failures_that_are_storage_problems(exc: BaseException, code: str | None) -> None:
    problem = storage_problem(exc)
    assert (problem.code if problem else None) == code
    if problem:
        assert "/" not in problem.message


async def test_database_failures_that_mean_unavailable(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(Exception) as missing_table:
            async with db.session() as s:
                await s.execute(text("SELECT * FROM no_such_table"))
        assert not database_unavailable(missing_table.value)  # a bug stays a 500
        assert database_storage_problem(missing_table.value) is None
    finally:
        await db.close()
    assert not database_unavailable(ConnectionRefusedError())  # not beneath a database error

    refused = Database("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    try:
        with pytest.raises(Exception) as down:
            async with refused.session() as s:
                await s.execute(text("SELECT 1"))
        assert type(down.value).__name__ == "ServiceUnavailableError"
    finally:
        await refused.close()


async def test_the_restart_policy_is_validated(api: Api, admin_token: str) -> None:
    for bad in ({"mode": "always"}, {"max_restarts": -1}, {"backoff_seconds": -1}, {"window_seconds": 0},
                {"surprise": 1}):  # fmt: skip
        response = await api.client.put(
            "/api/v1/config", json={"restart_policy": bad}, headers=auth(admin_token)
        )
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    current = (await api.client.get("/api/v1/config", headers=auth(admin_token))).json()["data"]
    assert current["restart_policy"] == {
        "mode": "off", "max_restarts": 3, "backoff_seconds": 1.0, "window_seconds": 600.0,
    }  # fmt: skip
