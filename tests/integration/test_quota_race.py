"""Parallel creates never overshoot a quota, on SQLite and on PostgreSQL (the check is the
database's: a conditional UPDATE in the transaction that inserts the VM)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from tests.conftest import Api, auth, fake_driver_factory, make_settings, running_api

BODY = {"cpu": 1, "memory": 128, "disk": 1}


async def test_parallel_creates_never_overshoot_the_quota(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    api: Api
    async with running_api(settings, fake_driver_factory, None) as api:
        admin = await api.login()
        user = await api.create_user(admin, "racer", quota={"max_vms": 5})
        token = await api.login("racer", "password-123")
        for i in range(2):
            response = await api.client.post(
                "/api/v1/vms", json={"name": f"owned-{i}", **BODY}, headers=auth(token)
            )
            assert response.status_code == 201, response.text

        responses = await asyncio.gather(
            *(
                api.client.post("/api/v1/vms", json={"name": f"race-{i}", **BODY}, headers=auth(token))
                for i in range(20)
            )
        )

        outcomes = Counter(
            (r.status_code, None if r.status_code == 201 else r.json()["error"]["code"]) for r in responses
        )
        assert outcomes == {(201, None): 3, (403, "QUOTA_EXCEEDED"): 17}, [r.text for r in responses]

        listed = await api.client.get("/api/v1/vms", params={"limit": 100}, headers=auth(token))
        vms = listed.json()["data"]["vms"]
        assert len(vms) == 5
        created = {r.json()["data"]["id"] for r in responses if r.status_code == 201}
        assert created <= {vm["id"] for vm in vms}
        response = await api.client.get(f"/api/v1/users/{user['id']}", headers=auth(admin))
        usage = response.json()["data"]["usage"]
        assert usage == {"vms": 5, "cpus": 5, "memory_mb": 5 * 128, "disk_gb": 5}
        # Only the VMs that exist have disks.
        assert sorted(api.container.agent.driver.known_run_dirs()) == sorted(vm["id"] for vm in vms)

        # Deleting one frees exactly one slot.
        response = await api.client.delete(f"/api/v1/vms/{vms[0]['id']}", headers=auth(token))
        assert response.status_code == 200, response.text
        responses = await asyncio.gather(
            *(
                api.client.post("/api/v1/vms", json={"name": f"again-{i}", **BODY}, headers=auth(token))
                for i in range(5)
            )
        )
        assert sorted(r.status_code for r in responses) == [201, 403, 403, 403, 403]
