"""The response envelope every JSON answer wears."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.responses import JSONResponse


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ok(data: Any = None, message: str = "OK", status: int = 200, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "data": data, "message": message}
    body.update(extra)
    body["timestamp"] = timestamp()
    return JSONResponse(body, status_code=status)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {
        "success": False,
        "error": {"code": code, "message": message, "details": details},
        "timestamp": timestamp(),
    }


def fail(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)
