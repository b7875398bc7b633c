"""Authentication: login shape, token checks and attacks, logout, lockout, API tokens."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from tests.conftest import Api, auth
from voidvm_server.errors import AuthError

LOGIN = "/api/v1/auth/login"
ME = "/api/v1/auth/me"


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_login_returns_the_seed_shape_with_a_top_level_token(api_any_db: Api) -> None:
    response = await api_any_db.client.post(LOGIN, json={"username": "admin", "password": "admin123"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["token"] == body["data"]["token"]
    assert body["data"]["token_type"] == "Bearer"
    assert body["data"]["expires_in"] > 0
    assert body["data"]["refresh_token"]
    assert body["data"]["user"]["username"] == "admin"
    assert body["message"] and body["timestamp"].endswith("Z")
    me = await api_any_db.client.get(ME, headers=auth(body["token"]))
    assert me.json()["data"]["role"] == "admin"


async def test_wrong_password_is_401_invalid_credentials(api_any_db: Api) -> None:
    response = await api_any_db.client.post(LOGIN, json={"username": "admin", "password": "nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_CREDENTIALS"
    unknown = await api_any_db.client.post(LOGIN, json={"username": "ghost", "password": "nope"})
    assert unknown.json()["error"]["code"] == "INVALID_CREDENTIALS"


async def test_missing_token_is_401_unauthorized(api: Api) -> None:
    response = await api.client.get("/api/v1/vms")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_malformed_token_is_401_invalid_token(api: Api) -> None:
    for token in ["garbage", "a.b.c", "vvm_not-a-real-token"]:
        response = await api.client.get(ME, headers=auth(token))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "INVALID_TOKEN"


async def test_token_signed_with_another_key_is_refused(api: Api, admin_token: str) -> None:
    claims = jwt.decode(admin_token, options={"verify_signature": False})
    forged = jwt.encode(claims, "another-key-entirely-" + "y" * 32, algorithm="HS256")
    response = await api.client.get(ME, headers=auth(forged))
    assert response.json()["error"]["code"] == "INVALID_TOKEN"


async def test_alg_none_is_refused(api: Api, admin_token: str) -> None:
    claims = jwt.decode(admin_token, options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    response = await api.client.get(ME, headers=auth(unsigned))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_TOKEN"


async def test_wrong_audience_issuer_or_missing_exp_is_refused(api: Api, admin_token: str) -> None:
    secret = api.container.settings.jwt_secret
    assert secret is not None
    claims = jwt.decode(admin_token, options={"verify_signature": False})
    for change in ({"aud": "someone-else"}, {"iss": "evil"}, {"exp": None}, {"typ": "refresh"}):
        tampered = {k: v for k, v in {**claims, **change}.items() if v is not None}
        token = jwt.encode(tampered, secret.get_secret_value(), algorithm="HS256")
        response = await api.client.get(ME, headers=auth(token))
        assert response.json()["error"]["code"] == "INVALID_TOKEN", change


async def test_expired_token_is_401_token_expired(api: Api, admin_token: str) -> None:
    secret = api.container.settings.jwt_secret
    assert secret is not None
    claims = jwt.decode(admin_token, options={"verify_signature": False})
    past = datetime.now(UTC) - timedelta(hours=2)
    claims.update(iat=past, nbf=past, exp=past + timedelta(minutes=1))
    token = jwt.encode(claims, secret.get_secret_value(), algorithm="HS256")
    response = await api.client.get(ME, headers=auth(token))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "TOKEN_EXPIRED"


async def test_logout_revokes_the_token_and_its_refresh_token(api_any_db: Api) -> None:
    login = await api_any_db.client.post(LOGIN, json={"username": "admin", "password": "admin123"})
    token, refresh = login.json()["token"], login.json()["data"]["refresh_token"]
    assert (await api_any_db.client.post("/api/v1/auth/logout", headers=auth(token))).status_code == 200
    after = await api_any_db.client.get(ME, headers=auth(token))
    assert after.status_code == 401
    again = await api_any_db.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert again.status_code == 401


async def test_refresh_issues_new_tokens_and_retires_the_old_refresh(api: Api) -> None:
    login = await api.client.post(LOGIN, json={"username": "admin", "password": "admin123"})
    refresh = login.json()["data"]["refresh_token"]
    renewed = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert renewed.status_code == 200
    assert (await api.client.get(ME, headers=auth(renewed.json()["token"]))).status_code == 200
    reused = await api.client.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
    assert reused.status_code == 401


async def test_disabled_user_tokens_stop_working(api_any_db: Api) -> None:
    admin = await api_any_db.login()
    user = await api_any_db.create_user(admin, "alice")
    token = await api_any_db.login("alice", "password-123")
    assert (await api_any_db.client.get(ME, headers=auth(token))).status_code == 200
    disabled = await api_any_db.client.put(
        f"/api/v1/users/{user['id']}", json={"status": "disabled"}, headers=auth(admin)
    )
    assert disabled.json()["data"]["status"] == "disabled"
    assert (await api_any_db.client.get(ME, headers=auth(token))).status_code == 401
    relogin = await api_any_db.client.post(LOGIN, json={"username": "alice", "password": "password-123"})
    assert relogin.status_code == 403
    assert relogin.json()["error"]["code"] == "ACCOUNT_DISABLED"


async def test_password_change_ends_old_sessions(api: Api) -> None:
    token = await api.login()
    changed = await api.client.put(
        "/api/v1/auth/password",
        json={"current_password": "admin123", "new_password": "a-much-better-one"},
        headers=auth(token),
    )
    assert changed.status_code == 200
    assert (await api.client.get(ME, headers=auth(token))).status_code == 401
    assert await api.login("admin", "a-much-better-one")
    assert api.container.default_admin_password is False


async def test_api_tokens_are_shown_once_work_and_can_be_revoked(api_any_db: Api) -> None:
    admin = await api_any_db.login()
    created = await api_any_db.client.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=auth(admin))
    assert created.status_code == 201
    secret = created.json()["data"]["token"]
    assert secret.startswith("vvm_")
    listed = await api_any_db.client.get("/api/v1/auth/tokens", headers=auth(admin))
    assert "token" not in listed.json()["data"]["tokens"][0]
    assert (await api_any_db.client.get(ME, headers=auth(secret))).status_code == 200
    token_id = created.json()["data"]["id"]
    revoked = await api_any_db.client.delete(f"/api/v1/auth/tokens/{token_id}", headers=auth(admin))
    assert revoked.status_code == 200
    assert (await api_any_db.client.get(ME, headers=auth(secret))).status_code == 401


async def test_jwt_secret_is_generated_once_with_mode_0600(tmp_path: object) -> None:
    from pathlib import Path

    from voidvm_server.auth.tokens import load_or_create_secret

    data = Path(str(tmp_path))
    first = load_or_create_secret(data)
    assert load_or_create_secret(data) == first
    assert (data / "jwt-secret").stat().st_mode & 0o777 == 0o600


async def test_a_password_change_ends_api_tokens_too(api: Api) -> None:
    token = await api.login()
    created = await api.client.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=auth(token))
    api_token = created.json()["data"]["token"]
    await api.client.put(
        "/api/v1/auth/password",
        json={"current_password": "admin123", "new_password": "a-much-better-one"},
        headers=auth(token),
    )
    assert (await api.client.get(ME, headers=auth(api_token))).status_code == 401


async def test_a_disabled_users_api_token_answers_403(api: Api) -> None:
    admin = await api.login()
    user = await api.create_user(admin, "dora")
    token = await api.login("dora", "password-123")
    api_token = (
        await api.client.post("/api/v1/auth/tokens", json={"name": "x"}, headers=auth(token))
    ).json()["data"]["token"]
    await api.client.put(f"/api/v1/users/{user['id']}", json={"status": "disabled"}, headers=auth(admin))
    refused = await api.client.get(ME, headers=auth(api_token))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ACCOUNT_DISABLED"


def test_a_token_checked_once_still_expires_with_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Signatures are checked once per token string; the expiry, at every use."""
    from voidvm_server.auth import tokens as token_module

    service = token_module.TokenService("s" * 32, issuer="voidvm", audience="voidvm-api", access_ttl=60,
                                        refresh_ttl=600)  # fmt: skip
    issued = service.issue("usr-1", 0)
    claims = service.decode(issued.access)
    assert service.decode(issued.access) is claims  # the second time from the checked ones
    with pytest.raises(AuthError):  # the same token is not taken as another kind
        service.decode(issued.access, kind="refresh")
    later = time.time() + 60 + token_module.LEEWAY_SECONDS + 1
    monkeypatch.setattr(token_module.time, "time", lambda: later)
    with pytest.raises(AuthError) as expired:
        service.decode(issued.access)
    assert expired.value.code == "TOKEN_EXPIRED"
    tampered = issued.access[:-2] + ("AA" if issued.access[-2:] != "AA" else "BB")
    with pytest.raises(AuthError):
        service.decode(tampered)
