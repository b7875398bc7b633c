"""Rate limits, live config, the system API, the audit log and Prometheus metrics."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api, auth, fake_driver_factory, make_settings, running_api


async def test_the_101st_request_in_a_minute_is_429(tmp_path: Path) -> None:
    async with running_api(
        make_settings(tmp_path, rate_limit="100/minute"), fake_driver_factory, None
    ) as api:
        token = await api.login()  # login spends the anonymous (per-address) budget, not the user's
        for i in range(100):
            ok = await api.client.get("/api/v1/vms", headers=auth(token))
            assert ok.status_code == 200, i
        assert ok.headers["x-ratelimit-limit"] == "100"
        assert ok.headers["x-ratelimit-remaining"] == "0"
        refused = await api.client.get("/api/v1/vms", headers=auth(token))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        await api.client.post(
            "/api/v1/users", json={"username": "other", "password": "password-123"}, headers=auth(token)
        )  # refused too, but does not matter: create the user directly instead
        await api.container.users.create("other2", "password-123")
        other = await api.login("other2", "password-123")
        assert (await api.client.get("/api/v1/vms", headers=auth(other))).status_code == 200
        health = await api.client.get("/api/v1/health")
        assert health.status_code == 200


async def test_the_window_resets(tmp_path: Path) -> None:
    async with running_api(make_settings(tmp_path, rate_limit="3/second"), fake_driver_factory, None) as api:
        token = await api.login()
        statuses = [
            (await api.client.get("/api/v1/auth/me", headers=auth(token))).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        for _ in range(40):  # the moving window frees a slot within about a second
            await asyncio.sleep(0.1)
            if (await api.client.get("/api/v1/auth/me", headers=auth(token))).status_code == 200:
                break
        else:
            pytest.fail("the rate-limit window never reset")


async def test_a_config_change_to_the_limit_is_live(api: Api, admin_token: str) -> None:
    changed = await api.client.put(
        "/api/v1/config", json={"rate_limits": {"per_role": {"user": "2/minute"}}}, headers=auth(admin_token)
    )
    assert changed.status_code == 200
    assert changed.json()["data"]["rate_limits"]["default"] == "100000/minute"  # deep-merged
    await api.create_user(admin_token, "limited")
    token = await api.login("limited", "password-123")
    codes = [(await api.client.get("/api/v1/vms", headers=auth(token))).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert (await api.client.get("/api/v1/vms", headers=auth(admin_token))).status_code == 200


async def test_invalid_config_is_refused_and_nothing_changes(api: Api, admin_token: str) -> None:
    before = (await api.client.get("/api/v1/config", headers=auth(admin_token))).json()["data"]
    bad = await api.client.put(
        "/api/v1/config",
        json={"vm_bounds": {"max_cpu": 0}, "rate_limits": {"default": "lots"}, "nonsense": 1},
        headers=auth(admin_token),
    )
    assert bad.status_code == 400
    fields = {d["field"] for d in bad.json()["error"]["details"]}
    assert {"vm_bounds.max_cpu", "rate_limits.default", "nonsense"} <= fields
    after = (await api.client.get("/api/v1/config", headers=auth(admin_token))).json()["data"]
    assert after == before


async def test_config_bounds_apply_to_creates_and_survive_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_api(settings, fake_driver_factory, None) as api:
        token = await api.login()
        await api.client.put("/api/v1/config", json={"vm_bounds": {"max_cpu": 2}}, headers=auth(token))
        big = await api.client.post(
            "/api/v1/vms", json={"name": "a", "cpu": 4, "memory": 128, "disk": 1}, headers=auth(token)
        )
        assert big.status_code == 400
    async with running_api(settings, fake_driver_factory, None) as api:
        assert api.container.live.current.vm_bounds.max_cpu == 2


@pytest.mark.redis
async def test_two_servers_share_one_budget_through_redis(tmp_path: Path) -> None:
    import redis.asyncio as redis

    client = redis.from_url("redis://127.0.0.1:6379")
    try:
        await client.ping()
    except OSError:
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    finally:
        await client.aclose()
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    namespace = secrets.token_hex(4)  # a fresh key space: earlier runs leave no counts behind
    common = {
        "database_url": db,
        "rate_limit": "4/minute",
        "redis_url": "redis://127.0.0.1:6379/0",
        "redis_prefix": namespace,
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        running_api(make_settings(tmp_path / "a", **common), fake_driver_factory, None) as one,
        running_api(make_settings(tmp_path / "b", **common), fake_driver_factory, None) as two,
    ):
        token = await one.login()
        codes = []
        for server in (one, two, one, two, one):
            codes.append((await server.client.get("/api/v1/auth/me", headers=auth(token))).status_code)
        assert codes == [200, 200, 200, 200, 429]


async def test_system_info_reports_the_host_and_accelerator(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "viewer")
    token = await api.login("viewer", "password-123")
    info = (await api.client.get("/api/v1/system/info", headers=auth(token))).json()["data"]
    assert info["hypervisor"]["accelerator"] == "fake"
    assert info["default_admin_password"] is None  # admins only
    admin_info = (await api.client.get("/api/v1/system/info", headers=auth(admin_token))).json()["data"]
    assert admin_info["default_admin_password"] is True
    assert info["host"]["arch"] and info["memory"]["total_mb"] > 0
    version = (await api.client.get("/api/v1/system/version", headers=auth(token))).json()["data"]
    assert version["api_version"] == "v1"
    stats = await api.client.get("/api/v1/system/stats?period=24h", headers=auth(token))
    assert stats.status_code == 403


async def test_system_stats_count_vms_and_samples(api: Api, admin_token: str) -> None:
    await api.client.post(
        "/api/v1/vms", json={"name": "s", "cpu": 1, "memory": 128, "disk": 1}, headers=auth(admin_token)
    )
    api.container.monitor.record(await api.container.monitor.sample())
    data = (await api.client.get("/api/v1/system/stats?period=1h", headers=auth(admin_token))).json()["data"]
    assert data["vms"]["by_status"] == {"stopped": 1}
    assert len(data["resources"]) == 1 and data["resources"][0]["host_memory_used_mb"] > 0
    assert data["events"]["vm.create"] == 1
    bad = await api.client.get("/api/v1/system/stats?period=2y", headers=auth(admin_token))
    assert bad.status_code == 400


async def test_audit_log_records_actions_and_failed_logins(api: Api, admin_token: str) -> None:
    headers = auth(admin_token)
    vm = (
        await api.client.post(
            "/api/v1/vms", json={"name": "a", "cpu": 1, "memory": 128, "disk": 1}, headers=headers
        )
    ).json()["data"]
    for action in ("start", "stop"):
        await api.client.post(f"/api/v1/vms/{vm['id']}/{action}", headers=headers)
    await api.client.delete(f"/api/v1/vms/{vm['id']}", headers=headers)
    await api.client.post("/api/v1/auth/login", json={"username": "admin", "password": "wrong"})
    logs = (await api.client.get(f"/api/v1/logs?vm={vm['id']}", headers=headers)).json()["data"]["logs"]
    assert [e["action"] for e in reversed(logs)] == ["vm.create", "vm.start", "vm.stop", "vm.delete"]
    assert all(e["username"] == "admin" and e["request_id"] and e["result"] == "success" for e in logs)
    failed = (await api.client.get("/api/v1/logs?action=auth.login&level=warning", headers=headers)).json()
    assert failed["data"]["logs"][0]["result"] == "failure"
    assert failed["data"]["logs"][0]["message"] == "INVALID_CREDENTIALS"


async def test_users_read_only_their_own_audit_entries(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "snoop")
    token = await api.login("snoop", "password-123")
    await api.client.post(
        "/api/v1/vms", json={"name": "mine", "cpu": 1, "memory": 128, "disk": 1}, headers=auth(token)
    )
    admin_id = (await api.client.get("/api/v1/auth/me", headers=auth(admin_token))).json()["data"]["id"]
    own = (await api.client.get(f"/api/v1/logs?user={admin_id}", headers=auth(token))).json()["data"]
    assert {e["username"] for e in own["logs"]} == {"snoop"}


async def test_prometheus_metrics_parse_and_count(api: Api, admin_token: str) -> None:
    await api.client.get("/api/v1/vms", headers=auth(admin_token))
    anonymous = await api.client.get("/metrics")
    assert anonymous.status_code == 401
    response = await api.client.get("/metrics", headers=auth(admin_token))
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    requests = [
        s for s in families["voidvm_http_requests"].samples
        if s.name == "voidvm_http_requests_total" and s.labels["route"] == "/api/v1/vms"
    ]  # fmt: skip
    assert requests and requests[0].value >= 1 and requests[0].labels["status"] == "200"
    assert "voidvm_qemu_processes" in families and "voidvm_vms" in families
    assert "voidvm_http_request_duration_seconds" in families


async def test_a_malformed_per_role_limit_is_refused(api: Api, admin_token: str) -> None:
    bad = await api.client.put(
        "/api/v1/config", json={"rate_limits": {"per_role": {"admin": "garbage"}}}, headers=auth(admin_token)
    )
    assert bad.status_code == 400
    assert (await api.client.get("/api/v1/vms", headers=auth(admin_token))).status_code == 200


async def test_the_live_default_image_is_used_when_os_is_omitted(api: Api, admin_token: str) -> None:
    images = api.container.images
    kernel = api.container.settings.data_dir / "fake-vmlinuz"
    await images.register_kernel_image("other", kernel, None, "console=ttyS0", default=False)
    changed = await api.client.put(
        "/api/v1/config", json={"default_image": "other"}, headers=auth(admin_token)
    )
    assert changed.status_code == 200
    body = {"name": "defaulted", "cpu": 1, "memory": 128, "disk": 1}
    vm = (await api.client.post("/api/v1/vms", json=body, headers=auth(admin_token))).json()["data"]
    assert vm["os"] == "other"
