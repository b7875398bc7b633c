"""Attacks on the HTTP edge, each against a real uvicorn on 127.0.0.1 run as `serve` runs it:
forged forwarded headers, a DNS-rebinding `Host`, slow senders, a connection flood.

Each attack must fail, and the legitimate use next to it must still work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import auth, fake_driver_factory
from tests.ws.conftest import TIMEOUT, WsServer, serve, ws_settings


@asynccontextmanager
async def server(tmp_path: Path, **overrides: Any) -> AsyncIterator[WsServer]:
    async with serve(ws_settings(tmp_path, **overrides), fake_driver_factory, None) as running:
        yield running


async def raw_exchange(port: int, request: bytes, *, timeout: float = TIMEOUT) -> bytes:
    """Send `request` on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def status_and_body(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def audit_addresses(running: WsServer, token: str, action: str) -> set[str | None]:
    response = await running.http.get(f"/api/v1/logs?action={action}&limit=100", headers=auth(token))
    assert response.status_code == 200, response.text
    return {entry["client_ip"] for entry in response.json()["data"]["logs"]}


async def until_at_most(running: WsServer, connections: int) -> None:
    """Wait until the server holds at most that many connections (it notices closes a moment
    after they happen)."""
    async with asyncio.timeout(TIMEOUT):
        while len(running.server.server_state.connections) > connections:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# -- forwarded headers ----------------------------------------------------------------------------
async def test_rotating_x_forwarded_for_does_not_escape_the_per_address_budget(tmp_path: Path) -> None:
    async with server(tmp_path, rate_limit="5/minute") as running:
        codes = []
        for n in range(8):
            response = await running.http.post(
                "/api/v1/auth/login",
                json={"username": "nobody", "password": "wrong"},
                headers={"X-Forwarded-For": f"198.51.100.{n}", "X-Real-IP": f"198.51.100.{n}"},
            )
            codes.append(response.status_code)
        assert codes == [401] * 5 + [429] * 3  # one budget: the address the request came from
        await running.container.limiter.reset()  # the address's budget is spent: start afresh
        token = await running.login()
        addresses = await audit_addresses(running, token, "auth.login")
        assert addresses == {"127.0.0.1"}  # the forged addresses never reach the audit log


async def test_x_forwarded_for_is_believed_from_a_named_proxy(tmp_path: Path) -> None:
    async with server(tmp_path, trusted_proxies=["127.0.0.1"]) as running:
        response = await running.http.post(
            "/api/v1/auth/login",
            json={"username": "admin", "password": "admin123"},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
        assert response.status_code == 200
        token = response.json()["token"]
        assert await audit_addresses(running, token, "auth.login") == {"203.0.113.7"}


def test_trusted_proxies_read_from_the_environment_as_a_list(monkeypatch: Any) -> None:
    from voidvm_server.config import Settings

    monkeypatch.setenv("VOIDVM_TRUSTED_PROXIES", "10.0.0.1, 192.0.2.0/24")
    monkeypatch.setenv("VOIDVM_ALLOWED_HOSTS", "vvm.example")
    settings = Settings()
    assert settings.trusted_proxies == ["10.0.0.1", "192.0.2.0/24"]
    assert "vvm.example" in settings.answered_hosts and "localhost" in settings.answered_hosts


# -- Host -------------------------------------------------------------------------------------------
async def test_a_rebinding_host_is_refused_for_http_and_websockets(tmp_path: Path) -> None:
    async with server(tmp_path) as running:
        login = {"username": "admin", "password": "admin123"}
        evil = await running.http.post(
            "/api/v1/auth/login", json=login, headers={"Host": f"rebind.example:{running.port}"}
        )
        assert evil.status_code == 400
        assert evil.json()["error"]["code"] == "INVALID_HOST"
        for host in ("localhost", "127.0.0.1", "[::1]"):
            good = await running.http.post(
                "/api/v1/auth/login", json=login, headers={"Host": f"{host}:{running.port}"}
            )
            assert good.status_code == 200, host
        token = good.json()["token"]

        page = f"http://rebind.example:{running.port}"  # the page's origin and Host after rebinding
        # With the rebinding Host, the Host check refuses (400); with an honest Host, the Origin check.
        for headers, status in (({"Host": f"rebind.example:{running.port}"}, 400), ({}, 403)):
            try:
                async with connect(
                    f"{running.ws_base}/ws?token={token}", origin=page,  # type: ignore[arg-type]
                    additional_headers=headers, open_timeout=TIMEOUT,
                ):  # fmt: skip
                    raise AssertionError(f"a socket opened from {page} with {headers}")
            except InvalidStatus as exc:
                assert exc.response.status_code == status
                code = "INVALID_HOST" if status == 400 else "FORBIDDEN"
                assert json.loads(exc.response.body or b"{}")["error"]["code"] == code
        async with connect(
            f"{running.ws_base}/ws?token={token}",
            origin=f"http://localhost:{running.port}",  # type: ignore[arg-type]
            open_timeout=TIMEOUT,
        ) as socket:
            await socket.send(json.dumps({"type": "ping", "data": {}}))
            assert json.loads(await socket.recv())["type"] == "pong"


async def test_configured_host_names_are_answered(tmp_path: Path) -> None:
    async with server(tmp_path, allowed_hosts=["vvm.example"]) as running:
        response = await running.http.get("/api/v1/health", headers={"Host": "vvm.example"})
        assert response.status_code == 200
        other = await running.http.get("/api/v1/health", headers={"Host": "other.example"})
        assert other.status_code == 400


# -- slow clients ---------------------------------------------------------------------------------
async def _dribble(port: int, interval: float, budget: float) -> tuple[bytes, float]:
    """Send a request one byte at a time; what the server answered, and after how long."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(budget):
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                # One byte under the short timeout (a cancelled read(1) consumes nothing; a cancelled
                # read() to EOF could lose what it had read), then the rest once the answer began.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        first = await reader.read(1)
                    return first + await reader.read(), loop.time() - started
        raise AssertionError("the whole request was sent: no deadline cut it off")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_slow_header_senders_are_cut_off_and_others_are_served(tmp_path: Path) -> None:
    async with server(tmp_path, header_timeout_seconds=1.0) as running:
        senders = [asyncio.create_task(_dribble(running.port, 0.2, 20)) for _ in range(50)]
        await asyncio.sleep(0.3)
        health = await running.http.get("/api/v1/health")
        assert health.status_code == 200  # served while 50 slow senders are connected
        results = await asyncio.gather(*senders)
        for answer, _elapsed in results:
            status, body = status_and_body(answer)
            assert status == 408 and body["error"]["code"] == "REQUEST_TIMEOUT"
        # No connection is left behind in the server (but httpx's kept-alive one).
        await until_at_most(running, 1)


async def test_a_silent_connection_is_closed(tmp_path: Path) -> None:
    async with server(tmp_path, header_timeout_seconds=0.5) as running:
        answer = await raw_exchange(running.port, b"")
        assert status_and_body(answer)[0] == 408


async def test_a_stalled_body_answers_408(tmp_path: Path) -> None:
    async with server(tmp_path, body_timeout_seconds=0.5) as running:
        request = (
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"username"'
        )
        status, body = status_and_body(await raw_exchange(running.port, request))
        assert status == 408 and body["error"]["code"] == "REQUEST_TIMEOUT"
        assert (await running.http.get("/api/v1/health")).status_code == 200


async def test_oversized_headers_answer_431(tmp_path: Path) -> None:
    async with server(tmp_path) as running:
        request = b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
        status, body = status_and_body(await raw_exchange(running.port, request))
        assert status == 431 and body["error"]["code"] == "HEADERS_TOO_LARGE"


async def test_connections_beyond_the_cap_answer_503_until_others_close(tmp_path: Path) -> None:
    async with server(tmp_path, max_connections=10, header_timeout_seconds=60) as running:
        await running.http.aclose()  # its kept-alive connection would count
        held = [await asyncio.open_connection("127.0.0.1", running.port) for _ in range(10)]
        try:
            status, body = status_and_body(await raw_exchange(running.port, b""))
            assert status == 503 and body["error"]["code"] == "SERVER_BUSY"
        finally:
            for _reader, writer in held:
                writer.close()
        await until_at_most(running, 0)
        answer = await raw_exchange(
            running.port, b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        assert status_and_body(answer)[0] == 200


async def _answer_then_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(TIMEOUT):
        return await reader.read()


async def test_body_bytes_left_after_the_answer_cannot_hold_the_connection(tmp_path: Path) -> None:
    async with server(tmp_path, header_timeout_seconds=1.0, body_timeout_seconds=1.0) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:  # a GET that announces a body it never sends: answered at once, then closed
            writer.write(
                b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\nx"
            )
            await writer.drain()
            answer = await _answer_then_eof(reader)
            assert answer.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()


async def test_a_kept_alive_connection_that_starts_a_request_and_stalls_is_cut_off(tmp_path: Path) -> None:
    async with server(tmp_path, header_timeout_seconds=1.0) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(TIMEOUT):
                first = await reader.readuntil(b"}")  # the first answer, connection kept alive
            assert first.startswith(b"HTTP/1.1 200")
            writer.write(b"G")  # one byte of a next request (it cancels uvicorn's keep-alive timer)
            await writer.drain()
            rest = await _answer_then_eof(reader)
            status, body = status_and_body(rest)
            assert status == 408 and body["error"]["code"] == "REQUEST_TIMEOUT"
        finally:
            writer.close()


async def test_a_large_body_sent_with_its_headers_is_not_taken_for_large_headers(tmp_path: Path) -> None:
    async with server(tmp_path) as running:
        body = json.dumps({"username": "admin", "password": "admin123", "pad": "x" * 200_000}).encode()
        request = (
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        status, answer = status_and_body(await raw_exchange(running.port, request))
        assert status == 400 and answer["error"]["code"] == "VALIDATION_ERROR"  # read whole: no 431
