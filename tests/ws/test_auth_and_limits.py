"""/ws authentication, revocation, socket limits, message limits, Origin, malformed input, logs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import auth, fake_driver_factory
from tests.ws.conftest import TIMEOUT, WsClient, WsServer, serve, ws_settings


async def test_token_in_the_query_string_authenticates(ws_fake: WsServer, admin: str) -> None:
    async with ws_fake.events(admin) as ws:
        assert (await ws.request("ping", {}, "pong"))["type"] == "pong"


async def test_auth_message_authenticates_and_echoes_the_id(ws_fake: WsServer, admin: str) -> None:
    async with ws_fake.socket() as ws:
        early = await ws.request("subscribe", {"topic": "vm-status-all"}, "subscribed")
        assert early["type"] == "error" and early["data"]["code"] == "UNAUTHORIZED"
        reply = await ws.request("auth", {"token": admin}, "authenticated")
        assert reply["type"] == "authenticated"
        assert reply["data"]["username"] == "admin" and reply["data"]["role"] == "admin"
        assert (await ws.request("subscribe", {"topic": "vm-status-all"}, "subscribed"))[
            "type"
        ] == "subscribed"


async def test_an_api_token_authenticates_too(ws_fake: WsServer, admin: str) -> None:
    created = await ws_fake.http.post("/api/v1/auth/tokens", json={"name": "ci"}, headers=auth(admin))
    assert created.status_code == 201, created.text
    async with ws_fake.events(created.json()["data"]["token"]) as ws:
        assert (await ws.request("ping", {}, "pong"))["type"] == "pong"


@pytest.mark.parametrize("via", ["query", "message"])
async def test_a_bad_token_is_refused_with_an_error_and_close_4401(ws_fake: WsServer, via: str) -> None:
    path = "/ws?token=not-a-token" if via == "query" else "/ws"
    async with ws_fake.socket(path) as ws:
        if via == "message":
            await ws.send("auth", {"token": "not-a-token"})
        code, reason = await ws.closed()
    assert code == 4401 and reason
    assert ws.seen[0]["type"] == "error" and ws.seen[0]["data"]["code"] == "INVALID_TOKEN"


async def test_an_unauthenticated_socket_is_closed_after_the_grace_period(tmp_path: Path) -> None:
    settings = ws_settings(tmp_path, ws_auth_grace_seconds=0.3)
    async with serve(settings, fake_driver_factory, None) as server, server.socket() as ws:
        code, reason = await ws.closed()
    assert code == 4401 and "authentication timeout" in reason
    assert ws.seen[-1]["data"]["code"] == "UNAUTHORIZED"


async def test_ten_sockets_are_accepted_and_the_eleventh_refused(ws_fake: WsServer, admin: str) -> None:
    alice = await ws_fake.create_user(admin, "alice")
    alice_id = (await ws_fake.http.get("/api/v1/auth/me", headers=auth(alice))).json()["data"]["id"]
    hub = ws_fake.container.ws_hub
    async with AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(ws_fake.events(alice)) for _ in range(10)]
        for ws in sockets:
            assert (await ws.request("ping", {}, "pong"))["type"] == "pong"
        async with ws_fake.events(alice) as eleventh:
            code, reason = await eleventh.closed()
        assert code == 1008 and "at most 10" in reason
        assert eleventh.seen[0]["data"]["code"] == "TOO_MANY_CONNECTIONS"
        async with ws_fake.events(admin) as others:  # the limit is per user
            assert (await others.request("ping", {}, "pong"))["type"] == "pong"
        sockets[0].connection.transport.abort()  # the client vanishes without a close handshake
        await _until(lambda: hub.count_for(alice_id) == 9)
        async with ws_fake.events(alice) as again:  # a slot freed
            assert (await again.request("ping", {}, "pong"))["type"] == "pong"


async def _until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll server-side state that offers no event to await (the hub's socket count)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_beyond_the_global_cap_sockets_close_with_1013(tmp_path: Path) -> None:
    async with serve(ws_settings(tmp_path, ws_max_total=2), fake_driver_factory, None) as server:
        token = await server.login()
        async with server.events(token) as one, server.events(token) as two, server.events(token) as three:
            code, reason = await three.closed()
            assert code == 1013 and "capacity" in reason
            assert (await one.request("ping", {}, "pong"))["type"] == "pong"
            assert (await two.request("ping", {}, "pong"))["type"] == "pong"


@pytest.mark.parametrize("how", ["logout", "disable", "revoke-api-token"])
async def test_a_revoked_credential_closes_its_sockets(ws_fake: WsServer, admin: str, how: str) -> None:
    bob = await ws_fake.create_user(admin, "bob")
    token = bob
    if how == "revoke-api-token":
        created = (
            await ws_fake.http.post("/api/v1/auth/tokens", json={"name": "x"}, headers=auth(bob))
        ).json()
        token = created["data"]["token"]
    async with ws_fake.events(token) as ws:
        assert (await ws.request("ping", {}, "pong"))["type"] == "pong"
        if how == "logout":
            response = await ws_fake.http.post("/api/v1/auth/logout", headers=auth(bob))
        elif how == "disable":
            me = (await ws_fake.http.get("/api/v1/auth/me", headers=auth(bob))).json()["data"]
            response = await ws_fake.http.put(
                f"/api/v1/users/{me['id']}", json={"status": "disabled"}, headers=auth(admin)
            )
        else:
            response = await ws_fake.http.delete(
                f"/api/v1/auth/tokens/{created['data']['id']}", headers=auth(bob)
            )
        assert response.status_code == 200, response.text
        code, reason = await ws.closed()
    assert code == 4401 and reason
    assert ws.seen[-1]["type"] == "error"
    assert ws.seen[-1]["data"]["code"] in {"INVALID_TOKEN", "ACCOUNT_DISABLED"}


async def test_malformed_messages_get_an_error_and_the_socket_stays_open(
    ws_fake: WsServer, admin: str
) -> None:
    async with ws_fake.events(admin) as ws:
        await ws.connection.send("{not json")
        assert (await ws.expect("error"))["data"]["code"] == "BAD_REQUEST"
        await ws.connection.send(json.dumps(["a list"]))
        assert (await ws.expect("error"))["data"]["code"] == "VALIDATION_ERROR"
        unknown = await ws.request("launch-missiles", {}, "x")
        assert unknown["data"]["code"] == "UNKNOWN_MESSAGE_TYPE"
        missing = await ws.request("subscribe", {"topic": "vm-status"}, "subscribed")
        assert missing["data"]["code"] == "VALIDATION_ERROR"
        assert "vmId" in missing["data"]["details"][0]["reason"]
        typo = await ws.request("vm-control", {"vmid": "vm-1", "action": "start"}, "vm-control-response")
        assert {d["field"] for d in typo["data"]["details"]} == {"data.vmId", "data.vmid"}
        bad_action = await ws.request(
            "vm-control", {"vmId": "vm-1", "action": "explode"}, "vm-control-response"
        )
        assert bad_action["data"]["code"] == "VALIDATION_ERROR"
        assert (await ws.request("ping", {"still": "open"}, "pong"))["data"] == {"still": "open"}


async def test_an_oversized_message_is_refused_with_close_1009(ws_fake: WsServer, admin: str) -> None:
    async with ws_fake.events(admin) as ws:
        await ws.send("ping", {"blob": "x" * (70 * 1024)})
        code, _ = await ws.closed()
    assert code == 1009
    assert ws.seen[-1]["data"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_a_message_flood_is_answered_with_rate_limit_exceeded(ws_fake: WsServer, admin: str) -> None:
    async with ws_fake.events(admin) as ws:
        for n in range(80):
            await ws.send("ping", {"n": n})
        error = await ws.expect("error")
        assert error["data"]["code"] == "RATE_LIMIT_EXCEEDED" and error["data"]["details"]["retry_after"] >= 0
        await asyncio.sleep(0.1)  # let the bucket refill a little, so that the marker gets through
        await ws.request("ping", {}, "pong")
        pongs = [m for m in ws.seen if m["type"] == "pong"]
        assert 50 <= len(pongs) - 1 < 80  # the burst was served, the excess dropped
        assert sum(1 for m in ws.seen if m["type"] == "error") == 1  # one warning, not one per message


async def test_keystrokes_have_their_own_larger_budget(ws_fake: WsServer, admin: str) -> None:
    async with ws_fake.events(admin) as ws:
        for _ in range(120):  # more than the 50 control messages, within the 500 keystrokes
            await ws.send("terminal-input", {"vmId": "vm-x", "input": "a"})
        await ws.request("ping", {}, "pong")
    codes = [m["data"]["code"] for m in ws.seen if m["type"] == "error"]
    assert codes == ["TERMINAL_NOT_CONNECTED"] * 120


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),
        ("http://127.0.0.1:5173", True),
        ("https://evil.example", False),
        ("https://app.example", True),
    ],
)
async def test_origin_allow_list(tmp_path: Path, origin: str | None, allowed: bool) -> None:
    settings = ws_settings(tmp_path, ws_allowed_origins=["https://app.example"])
    async with serve(settings, fake_driver_factory, None) as server:
        token = await server.login()
        url = f"{server.ws_base}/ws?token={token}"
        if allowed:
            async with connect(url, origin=origin) as conn:
                ws = WsClient(conn)
                assert (await ws.request("ping", {}, "pong"))["type"] == "pong"
        else:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, origin=origin):
                    pass
            assert refused.value.response.status_code == 403
            assert json.loads(refused.value.response.body)["error"]["code"] == "FORBIDDEN"


async def test_tokens_in_websocket_urls_never_reach_the_logs(
    ws_fake: WsServer, admin: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        async with ws_fake.events(admin) as ws:
            await ws.request("ping", {}, "pong")
        async with ws_fake.socket("/api/v1/vms/vm-x/console?ticket=secret-ticket-value") as ws:
            assert (await ws.closed())[0] == 4401
    server_side = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    text = "\n".join(record.getMessage() for record in server_side)
    assert "WebSocket /ws?token=[redacted]" in text
    assert admin not in text and "secret-ticket-value" not in text


async def test_a_role_change_closes_the_sockets_opened_under_the_old_role(
    ws_fake: WsServer, admin: str
) -> None:
    boss = await ws_fake.create_user(admin, "boss")
    me = (await ws_fake.http.get("/api/v1/auth/me", headers=auth(boss))).json()["data"]
    await ws_fake.http.put(f"/api/v1/users/{me['id']}", json={"role": "admin"}, headers=auth(admin))
    promoted = await ws_fake.login("boss", "password-123")
    async with ws_fake.events(promoted) as ws:
        assert (await ws.request("ping", {}, "pong"))["type"] == "pong"
        demoted = await ws_fake.http.put(
            f"/api/v1/users/{me['id']}", json={"role": "user"}, headers=auth(admin)
        )
        assert demoted.status_code == 200
        code, reason = await ws.closed()
    assert code == 4401 and "role" in reason
