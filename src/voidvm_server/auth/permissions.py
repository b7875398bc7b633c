"""Roles and the permissions they grant."""

from __future__ import annotations

from voidvm_server.domain.models import Role

PERMISSIONS: dict[str, str] = {
    "vm:read": "List and inspect virtual machines",
    "vm:create": "Create virtual machines",
    "vm:start": "Start, restart, resume and reset virtual machines",
    "vm:stop": "Stop and pause virtual machines",
    "vm:delete": "Delete virtual machines",
    "system:admin": "Manage users, images, configuration and read every audit entry",
}

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset(PERMISSIONS),
    Role.USER: frozenset(p for p in PERMISSIONS if p != "system:admin"),
}
