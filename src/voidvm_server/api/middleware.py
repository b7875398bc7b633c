"""Pure ASGI middleware: request ids, body size cap, rate-limit headers, last-resort errors.

It is the outermost layer, so every response (a crash's 500 included) gets `X-Request-ID`.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voidvm_server.api.envelope import error_body
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


class BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        max_upload_bytes: int,
        upload_paths: tuple[str, ...],
        metrics: RequestMetrics | None = None,
        api_prefix: str = "/api/v1",
    ) -> None:
        self.app = app
        self.api_prefix = api_prefix
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes
        self.upload_paths = upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
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

        limit = self.max_upload if scope["path"] in self.upload_paths else self.max_body
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit, request_id)
            return

        received = 0
        too_large = {"hit": False}

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large["hit"] = True
                    raise BodyTooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            if too_large["hit"]:
                # The framework turned our BodyTooLarge into its own answer; ours wins.
                if message["type"] == "http.response.start":
                    status_holder["status"], status_holder["sent"] = 413, True
                    await self._too_large(send, limit, request_id)
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
        except BodyTooLarge:
            if not status_holder["sent"]:
                await self._too_large(send, limit, request_id)
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
    async def _too_large(cls, send: Send, limit: int, request_id: str) -> None:
        message = f"The request body is larger than {limit} bytes"
        await cls._send_error(send, 413, "PAYLOAD_TOO_LARGE", message, request_id)

    @staticmethod
    async def _send_error(send: Send, status: int, code: str, message: str, request_id: str) -> None:
        body: dict[str, Any] = error_body(code, message)
        payload = json.dumps(body).encode()
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": payload})
