"""Users and roles: admin-only management, no mass assignment, quotas."""

from __future__ import annotations

from tests.conftest import Api, auth


async def test_plain_user_gets_403_on_admin_routes(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "bob")
    token = await api.login("bob", "password-123")
    for method, path in [
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/users"),
        ("GET", "/api/v1/roles"),
        ("GET", "/api/v1/permissions"),
        ("GET", "/api/v1/config"),
        ("PUT", "/api/v1/config"),
    ]:
        response = await api.client.request(method, path, headers=auth(token), json={})
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "FORBIDDEN"


async def test_admin_manages_users(api_any_db: Api) -> None:
    admin = await api_any_db.login()
    user = await api_any_db.create_user(admin, "carol", email="carol@example.com", quota={"max_vms": 2})
    assert user["role"] == "user" and user["quota"]["max_vms"] == 2
    listed = await api_any_db.client.get("/api/v1/users", headers=auth(admin))
    assert {u["username"] for u in listed.json()["data"]["users"]} == {"admin", "carol"}
    updated = await api_any_db.client.put(
        f"/api/v1/users/{user['id']}", json={"quota": {"max_vms": 7}}, headers=auth(admin)
    )
    assert updated.json()["data"]["quota"]["max_vms"] == 7
    assert updated.json()["data"]["quota"]["max_cpus"] == user["quota"]["max_cpus"]
    deleted = await api_any_db.client.delete(f"/api/v1/users/{user['id']}", headers=auth(admin))
    assert deleted.status_code == 200
    gone = await api_any_db.client.get(f"/api/v1/users/{user['id']}", headers=auth(admin))
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "USER_NOT_FOUND"


async def test_duplicate_username_is_409(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "dave")
    again = await api.client.post(
        "/api/v1/users", json={"username": "dave", "password": "password-123"}, headers=auth(admin_token)
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "NAME_CONFLICT"


async def test_users_cannot_raise_their_own_role_or_quota(api: Api, admin_token: str) -> None:
    await api.create_user(admin_token, "eve")
    token = await api.login("eve", "password-123")
    me = await api.client.get("/api/v1/auth/me", headers=auth(token))
    eve_id = me.json()["data"]["id"]
    attempt = await api.client.put(
        f"/api/v1/users/{eve_id}", json={"role": "admin", "quota": {"max_vms": 99}}, headers=auth(token)
    )
    assert attempt.status_code == 403
    sneaky = await api.client.put(
        "/api/v1/auth/password",
        json={"current_password": "password-123", "new_password": "password-456", "role": "admin"},
        headers=auth(token),
    )
    assert sneaky.status_code == 400
    after = await api.client.get(f"/api/v1/users/{eve_id}", headers=auth(admin_token))
    assert after.json()["data"]["role"] == "user"
    assert after.json()["data"]["quota"]["max_vms"] == 5


async def test_roles_and_permissions_are_listed(api: Api, admin_token: str) -> None:
    roles = (await api.client.get("/api/v1/roles", headers=auth(admin_token))).json()["data"]["roles"]
    by_name = {r["name"]: set(r["permissions"]) for r in roles}
    assert "system:admin" in by_name["admin"] and "system:admin" not in by_name["user"]
    perms = (await api.client.get("/api/v1/permissions", headers=auth(admin_token))).json()
    assert {p["id"] for p in perms["data"]["permissions"]} >= {"vm:read", "vm:create", "vm:delete"}


async def test_weak_password_is_refused(api: Api, admin_token: str) -> None:
    response = await api.client.post(
        "/api/v1/users", json={"username": "frank", "password": "short"}, headers=auth(admin_token)
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "password"
