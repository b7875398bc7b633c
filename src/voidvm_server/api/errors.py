"""The ONE table from errors to HTTP statuses, and the handlers that apply it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voidvm_server import errors as e
from voidvm_server.api.envelope import fail

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_TABLE: list[tuple[type[e.VoidVMError], int]] = [
    (e.ValidationError, 400),
    (e.AuthError, 401),
    (e.QuotaExceededError, 403),
    (e.ForbiddenError, 403),
    (e.NotFoundError, 404),
    (e.ConflictError, 409),
    (e.TooManyRequestsError, 429),
    (e.HypervisorUnavailableError, 503),
    (e.HypervisorTimeoutError, 504),
    (e.DriverError, 500),
    (e.VoidVMError, 500),
]

HTTP_CODES = {
    400: ("BAD_REQUEST", "The request is malformed"),
    401: ("UNAUTHORIZED", "Authentication required"),
    403: ("FORBIDDEN", "You do not have permission to do this"),
    404: ("NOT_FOUND", "The requested resource does not exist"),
    405: ("METHOD_NOT_ALLOWED", "This method is not allowed here"),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large"),
    415: ("UNSUPPORTED_MEDIA_TYPE", "Send JSON with Content-Type: application/json"),
    429: ("RATE_LIMIT_EXCEEDED", "Too many requests"),
}


def status_for(exc: e.VoidVMError) -> int:
    for cls, status in STATUS_TABLE:
        if isinstance(exc, cls):
            return status
    return 500


async def _voidvm_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, e.VoidVMError)
    status = status_for(exc)
    headers = None
    if isinstance(exc, e.TooManyRequestsError):
        headers = {"Retry-After": str(exc.retry_after)}
    if status >= 500:
        log.error("%s: %s (%s)", exc.code, exc.message, exc.details, exc_info=exc)
        return fail(status, exc.code, exc.message, None, headers)
    return fail(status, exc.code, exc.message, exc.details, headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    issues = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return fail(400, "BAD_REQUEST", "The request body is not valid JSON")
        reason = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            reason = "unknown field"
        issues.append({"field": _field_name(tuple(err.get("loc", ()))), "reason": reason})
    return fail(400, "VALIDATION_ERROR", "Request parameters are invalid", issues)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, message = HTTP_CODES.get(exc.status_code, ("HTTP_ERROR", "Request failed"))
    if exc.status_code == 404 and exc.detail not in (None, "Not Found"):
        message = str(exc.detail)
    return fail(exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return fail(500, "INTERNAL_SERVER_ERROR", "An internal error occurred")


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.VoidVMError, _voidvm_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
