"""The response envelope every JSON answer wears."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.responses import JSONResponse


class EnvelopeResponse(JSONResponse):
    """JSON as Starlette writes it (compact, UTF-8), by orjson: a page of 20 VMs is serialised
    in about a tenth of the time the standard library takes."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)  # keys as json.dumps takes them


def timestamp() -> str:
    """Now, to the second: 2026-11-29T03:10:00Z (isoformat is several times cheaper than strftime)."""
    return datetime.now(UTC).isoformat(timespec="seconds")[:19] + "Z"


def ok(data: Any = None, message: str = "OK", status: int = 200, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "data": data, "message": message}
    body.update(extra)
    body["timestamp"] = timestamp()
    return EnvelopeResponse(body, status_code=status)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {
        "success": False,
        "error": {"code": code, "message": message, "details": details},
        "timestamp": timestamp(),
    }


def fail(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return EnvelopeResponse(error_body(code, message, details), status_code=status, headers=headers)
