"""Pure ASGI middleware: request ids, the `Host` check, body size cap and read deadline,
rate-limit headers, last-resort errors.

It is the outermost layer, so every response (a crash's 500 included) gets `X-Request-ID`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voidvm_server.api.envelope import error_body
from voidvm_server.api.hosts import HostPolicy
from voidvm_server.api.metrics import RequestMetrics
from voidvm_server.services import context

log = logging.getLogger("voidvm_server.access")
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
VM_IN_PATH = re.compile(r"/vms/(vm-[0-9a-f]{12})(?:/|$)")


def _route_label(scope: Scope, api_prefix: str) -> str:
    """The route template (`/api/v1/vms/{vm_id}`), never the raw path, so labels stay bounded.

    FastAPI keeps an included router's prefix out of its routes' `path`; put it back.
    """
    route = scope.get("route")
    if route is None:
        return "unmatched"
    path = str(getattr(route, "path", "unmatched"))
    if scope["path"].startswith(api_prefix) and not path.startswith(api_prefix):
        return api_prefix + path
    return path


class BodyRefused(Exception):
    """The request body broke a limit; the middleware answers `status` instead of the app."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        upload_paths: tuple[str, ...],
        host_policy: HostPolicy | None = None,
        body_timeout: float = 30.0,
        metrics: RequestMetrics | None = None,
        api_prefix: str = "/api/v1",
    ) -> None:
        self.app = app
        self.host_policy = host_policy
        self.body_timeout = body_timeout
        self.api_prefix = api_prefix
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.host_policy is not None and not self.host_policy.allows(headers.get("host")):
            await self._refuse_host(scope, send)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        incoming = headers.get("x-request-id", "")
        request_id = incoming if SAFE_REQUEST_ID.match(incoming) else secrets.token_hex(8)
        client = scope.get("client")
        context.request_id.set(request_id)
        context.client_ip.set(client[0] if client else None)
        context.user_name.set(None)
        vm_match = VM_IN_PATH.search(scope["path"])
        context.vm_id.set(vm_match.group(1) if vm_match else None)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500, "sent": False}

        upload = scope["path"] in self.upload_paths
        limit = self.max_upload if upload else self.max_body
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit, request_id)
            return

        received = 0
        body_done = False
        # A small body must arrive whole within body_timeout; an upload may take as long as it
        # needs, but never waits longer than that for its next piece.
        body_deadline = None if upload else asyncio.get_running_loop().time() + self.body_timeout
        refused: dict[str, BodyRefused] = {}

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout) as window:
                    if body_deadline is not None:
                        window.reschedule(body_deadline)
                    message = await receive()
            except TimeoutError:
                refused["body"] = BodyRefused(
                    408, "REQUEST_TIMEOUT", f"The request body did not arrive within {self.body_timeout:g} s"
                )
                raise refused["body"] from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    refused["body"] = BodyRefused(
                        413, "PAYLOAD_TOO_LARGE", f"The request body is larger than {limit} bytes"
                    )
                    raise refused["body"]
            return message

        async def send_with_headers(message: Message) -> None:
            if "body" in refused:
                # The framework turned our BodyRefused into its own answer; ours wins.
                if message["type"] == "http.response.start":
                    status_holder["status"], status_holder["sent"] = refused["body"].status, True
                    await self._send_refusal(send, refused["body"], request_id)
                return
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["sent"] = True
                extra = [(b"x-request-id", request_id.encode())]
                for name, value in scope["state"].get("rate_headers", {}).items():
                    extra.append((name.lower().encode(), str(value).encode()))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyRefused as exc:
            if not status_holder["sent"]:
                status_holder["status"] = exc.status
                await self._send_refusal(send, exc, request_id)
        except Exception:
            log.exception("Unhandled error (request %s)", request_id)
            if not status_holder["sent"]:
                await self._send_error(send, 500, "INTERNAL_SERVER_ERROR",
                                       "An internal error occurred", request_id)  # fmt: skip
        finally:
            elapsed = time.perf_counter() - started
            route = _route_label(scope, self.api_prefix)
            if self.metrics is not None:
                self.metrics.observe(scope["method"], route, int(status_holder["status"]), elapsed)
            log.info(
                "%s %s -> %s in %.1f ms",
                scope["method"],
                scope["path"],
                status_holder["status"],
                elapsed * 1000,
            )

    @classmethod
    async def _send_refusal(cls, send: Send, refusal: BodyRefused, request_id: str) -> None:
        # The rest of the body is not read: the connection cannot carry another request.
        await cls._send_error(send, refusal.status, refusal.code, refusal.message, request_id, close=True)

    @classmethod
    async def _refuse_host(cls, scope: Scope, send: Send) -> None:
        message = "This server does not answer to that Host name (see VOIDVM_ALLOWED_HOSTS)"
        if scope["type"] == "websocket":
            if "websocket.http.response" not in scope.get("extensions", {}):
                await send({"type": "websocket.close", "code": 1008, "reason": "host not allowed"})
                return
            body = json.dumps(error_body("INVALID_HOST", message)).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "websocket.http.response.start", "status": 400, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        await cls._send_error(send, 400, "INVALID_HOST", message, secrets.token_hex(8), close=True)

    @classmethod
    async def _too_large(cls, send: Send, limit: int, request_id: str) -> None:
        message = f"The request body is larger than {limit} bytes"
        await cls._send_error(send, 413, "PAYLOAD_TOO_LARGE", message, request_id, close=True)

    @staticmethod
    async def _send_error(
        send: Send, status: int, code: str, message: str, request_id: str, *, close: bool = False
    ) -> None:
        body: dict[str, Any] = error_body(code, message)
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
