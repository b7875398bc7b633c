"""Every REST operation of API v1 and the SDK method that calls it (relative to a client).

Keys are `"METHOD /path"` relative to `/api/v1`, path parameters written `{id}`. The server's
test suite compares this map with the server's OpenAPI document, so the SDK cannot drift.
"""

from __future__ import annotations

import re

OPERATIONS: dict[str, str] = {
    "POST /auth/login": "auth.login",
    "POST /auth/refresh": "auth.refresh",
    "POST /auth/logout": "auth.logout",
    "GET /auth/me": "auth.me",
    "PUT /auth/password": "auth.change_password",
    "GET /auth/tokens": "auth.tokens.list",
    "POST /auth/tokens": "auth.tokens.create",
    "DELETE /auth/tokens/{id}": "auth.tokens.revoke",
    "GET /vms": "vms.list",
    "POST /vms": "vms.create",
    "GET /vms/{id}": "vms.get",
    "PUT /vms/{id}": "vms.update",
    "PATCH /vms/{id}": "vms.update",
    "DELETE /vms/{id}": "vms.delete",
    "POST /vms/{id}/start": "vms.start",
    "POST /vms/{id}/stop": "vms.stop",
    "POST /vms/{id}/restart": "vms.restart",
    "POST /vms/{id}/pause": "vms.pause",
    "POST /vms/{id}/resume": "vms.resume",
    "POST /vms/{id}/reset": "vms.reset",
    "GET /vms/{id}/status": "vms.status",
    "GET /vms/{id}/metrics": "vms.metrics",
    "GET /vms/{id}/console/log": "vms.console_log",
    "POST /vms/{id}/console": "vms.console_ticket",
    "GET /images": "images.list",
    "POST /images": "images.create",
    "POST /images/upload": "images.upload",
    "GET /images/{id}": "images.get",
    "DELETE /images/{id}": "images.delete",
    "GET /operations": "operations.list",
    "GET /operations/{id}": "operations.get",
    "GET /operations/{id}/wait": "operations.wait",
    "DELETE /operations/{id}": "operations.cancel",
    "GET /system/info": "system.info",
    "GET /system/version": "system.version",
    "GET /system/stats": "system.stats",
    "GET /config": "system.get_config",
    "PUT /config": "system.update_config",
    "GET /logs": "system.logs",
    "GET /roles": "system.roles",
    "GET /permissions": "system.permissions",
    "GET /health": "system.health",
    "GET /ready": "system.ready",
    "GET /users": "users.list",
    "POST /users": "users.create",
    "GET /users/{id}": "users.get",
    "PUT /users/{id}": "users.update",
    "DELETE /users/{id}": "users.delete",
}


def normalize_operation(method: str, path: str) -> str:
    """`("get", "/api/v1/vms/{vm_id}")` -> `"GET /vms/{id}"`."""
    relative = re.sub(r"^/api/v1(?=/|$)", "", path)
    relative = re.sub(r"\{[^}]*\}", "{id}", relative).rstrip("/") or "/"
    return f"{method.upper()} {relative}"
