"""The ONE table from errors to HTTP statuses, and the handlers that apply it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from voidvm_server import errors as e
from voidvm_server.api.envelope import fail
from voidvm_server.persistence.engine import database_storage_problem, database_unavailable

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides its status.
STATUS_TABLE: list[tuple[type[e.VoidVMError], int]] = [
    (e.ValidationError, 400),
    (e.AccountDisabledError, 403),
    (e.AuthError, 401),
    (e.QuotaExceededError, 403),
    (e.ForbiddenError, 403),
    (e.NotFoundError, 404),
    (e.ConflictError, 409),
    (e.TooManyRequestsError, 429),
    (e.InsufficientStorageError, 507),
    (e.StorageError, 507),
    (e.ServiceUnavailableError, 503),
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
DATABASE_RETRY_AFTER_SECONDS = 2


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
    if isinstance(exc, e.ServiceUnavailableError):  # expected while the database restarts
        log.warning("%s: %s (caused by %s)", exc.code, exc.message, type(exc.__cause__).__name__)
        return fail(status, exc.code, exc.message, None, {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
    if isinstance(exc, e.HypervisorTimeoutError | e.StorageError):  # conditions, not bugs
        log.warning("%s: %s", exc.code, exc.message)
        return fail(status, exc.code, exc.message, None, headers)
    if status >= 500:
        log.error("%s: %s (%s)", exc.code, exc.message, exc.details, exc_info=exc)
        return fail(status, exc.code, exc.message, None, headers)
    return fail(status, exc.code, exc.message, exc.details, headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    # Only the first element says where the value came from: a body field may well be named
    # "path" (an image import's) and must keep that name.
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
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


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    storage = database_storage_problem(exc)
    if storage is not None:
        return await _voidvm_error(request, storage)
    if not database_unavailable(exc):
        return await _unexpected(request, exc)
    log.warning("Database unavailable on %s %s: %s", request.method, request.url.path,
                type(exc).__name__)  # fmt: skip
    return fail(503, "SERVICE_UNAVAILABLE", "The database is unavailable; try again shortly",
                headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})  # fmt: skip


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    if database_unavailable(exc) or database_storage_problem(exc) is not None:
        return await _database_error(request, exc)
    log.error("Unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return fail(500, "INTERNAL_SERVER_ERROR", "An internal error occurred")


def install(app: FastAPI) -> None:
    app.add_exception_handler(e.VoidVMError, _voidvm_error)
    for database_error in (sa_exc.DBAPIError, sa_exc.TimeoutError):
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
