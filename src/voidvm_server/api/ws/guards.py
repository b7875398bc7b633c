"""Handshake checks shared by every WebSocket endpoint: the Origin allow-list, credentials.

Origin: a request without an Origin header comes from a non-browser client and is allowed. A
browser's Origin is allowed when its host is a name the server answers to (`HostPolicy`:
localhost, the listen address, `allowed_hosts`; any port or scheme), or the IP address the
request was sent to, or when it is listed in `ws_allowed_origins` (exact `scheme://host[:port]`,
or `*`). A name is never matched against the request's own `Host`, which a DNS-rebinding page
controls; only when `allowed_hosts` holds `*` (no Host check at all) must the Origin's host equal
the `Host` instead. Anything else is refused before the handshake completes (HTTP 403, in the
envelope).
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.websockets import WebSocket

from voidvm_server.api.envelope import error_body
from voidvm_server.api.hosts import HostPolicy, hostname
from voidvm_server.api.ws.protocol import CLOSE_POLICY


def origin_allowed(origin: str | None, host: str | None, policy: HostPolicy, allowed: list[str]) -> bool:
    if origin is None:
        return True
    normalized = origin.strip().rstrip("/").lower()
    if "*" in allowed or normalized in {a.strip().rstrip("/").lower() for a in allowed}:
        return True
    origin_host = hostname(normalized)
    return origin_host is not None and policy.allows_origin(origin_host, host)


async def refuse_origin(websocket: WebSocket) -> None:
    """Refuse the handshake: HTTP 403 with the envelope when the server can, else close 1008."""
    message = "This Origin may not open WebSockets here (see ws_allowed_origins)"
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = error_body("FORBIDDEN", message)
        await websocket.send_denial_response(JSONResponse(body, status_code=403))
    else:
        await websocket.close(CLOSE_POLICY, message)


def check_origin(websocket: WebSocket, policy: HostPolicy, allowed: list[str]) -> bool:
    headers = websocket.headers
    return origin_allowed(headers.get("origin"), headers.get("host"), policy, allowed)


def bearer(websocket: WebSocket) -> str | None:
    """The token from `Authorization: Bearer …` (non-browser clients) or `?token=`."""
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    token = websocket.query_params.get("token")
    return token or None


def int_param(websocket: WebSocket, name: str) -> int | None:
    value = websocket.query_params.get(name, "")
    return int(value) if value.isdigit() else None
